"""SigmoidNetwork(pretrain="rbm"): RBM-initialised hidden layers, fine-tuned by backprop."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import rbm
from trainer.network import SigmoidNetwork

pytestmark = pytest.mark.filterwarnings("ignore::trainer.network.ConvergenceWarning")


def clusters(n, seed=0, d=12, k=4):
    """``k`` classes, each a Gaussian blob in a random 3-D subspace of ``d`` dimensions."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(42).normal(0, 2.0, size=(k, 3))
    mix = np.random.default_rng(43).normal(size=(3, d))
    y = rng.integers(k, size=n)
    X = (centres[y] + 0.6 * rng.normal(size=(n, 3))) @ mix + 0.3 * rng.normal(size=(n, d))
    return X.astype(np.float32), y


def frozen(**kw):
    # a learning rate of ~0 keeps the initial weights: what pretraining produced
    return SigmoidNetwork(hidden_layers=(8, 4), learning_rate=1e-12, max_epochs=1,
                          random_state=0, **kw)


def test_pretraining_sets_the_hidden_layers_from_the_data(monkeypatch):
    X, y = clusters(300)
    produced = []

    def recording(*args, **kwargs):  # the real pretraining, remembering what it returned
        produced.append(real(*args, **kwargs))
        return produced[-1]

    real = rbm.pretrain_layers
    monkeypatch.setattr(rbm, "pretrain_layers", recording)
    plain = frozen().fit(X, y)
    pre = frozen(pretrain="rbm").fit(X, y)
    assert len(produced) == 1 and [W.shape for W in pre.coefs_] == [(12, 8), (8, 4), (4, 4)]
    for (coef, intercept), W, b in zip(produced[0], pre.coefs_, pre.intercepts_, strict=False):
        np.testing.assert_allclose(W, coef, atol=1e-9)
        np.testing.assert_allclose(b, intercept, atol=1e-9)
    assert not np.allclose(pre.coefs_[0], plain.coefs_[0])
    # the output layer is not pretrained: both start from the same random draw
    np.testing.assert_allclose(pre.coefs_[-1], plain.coefs_[-1], atol=1e-9)


def test_unlabelled_rows_change_the_pretraining_and_need_pretrain():
    X, y = clusters(60)
    extra, _ = clusters(600, seed=1)
    without = frozen(pretrain="rbm").fit(X, y)
    with_extra = frozen(pretrain="rbm").fit(X, y, unlabelled=extra)
    assert not np.allclose(without.coefs_[0], with_extra.coefs_[0])
    again = frozen(pretrain="rbm").fit(X, y, unlabelled=extra)
    np.testing.assert_array_equal(again.coefs_[0], with_extra.coefs_[0])
    with pytest.raises(ValueError, match="only used by pretrain='rbm'"):
        frozen().fit(X, y, unlabelled=extra)
    with pytest.raises(ValueError, match="features"):
        frozen(pretrain="rbm").fit(X, y, unlabelled=extra[:, :5])


def test_pretrained_network_fine_tunes_to_a_good_classifier():
    X, y = clusters(400)
    Xt, yt = clusters(400, seed=5)
    net = SigmoidNetwork(hidden_layers=(16,), pretrain="rbm", random_state=0).fit(
        X[:40], y[:40], unlabelled=X)
    assert net.score(Xt, yt) > 0.9


def test_bad_pretrain_is_named():
    X, y = clusters(30)
    with pytest.raises(ValueError, match="pretrain must be None or 'rbm'"):
        SigmoidNetwork(pretrain="dbn").fit(X, y)


def test_pretraining_without_hidden_layers_is_a_warning():
    X, y = clusters(40)
    with pytest.warns(UserWarning, match="does nothing without hidden layers"):
        SigmoidNetwork(hidden_layers=(), pretrain="rbm").fit(X, y)
