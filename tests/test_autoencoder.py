"""The sigmoid autoencoder: exact gradients, it learns normal structure, ONNX parity."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from trainer.autoencoder import SigmoidAutoencoder
from trainer.graph import GraphBuilder, float_input
from trainer.network import SigmoidNetwork, _backprop

# Short trainings on purpose: the stopping rule is the network's and tested there.
pytestmark = pytest.mark.filterwarnings("ignore::trainer.network.ConvergenceWarning")


def low_rank(n=400, d=10, rank=2, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(rank, d))
    X = np.tanh(rng.normal(size=(n, rank))) @ basis + noise * rng.normal(size=(n, d))
    return (X - X.mean(0)) / X.std(0), basis


def reference_loss(coefs, intercepts, X, l2):
    a = X
    for W, b in zip(coefs[:-1], intercepts[:-1], strict=True):
        a = 1.0 / (1.0 + np.exp(-(a @ W + b)))
    r = a @ coefs[-1] + intercepts[-1]
    data = (0.5 * ((r - X) ** 2).mean(axis=1)).mean()
    return data + 0.5 * l2 * sum((W**2).sum() for W in coefs)


@pytest.mark.parametrize("depth", [(3,), (4, 2, 4)], ids=str)
def test_gradient_matches_finite_differences(depth):
    X, _ = low_rank(n=25, d=5)
    ae = SigmoidAutoencoder(hidden_layers=depth, dtype="float64", random_state=0)
    ae.partial_fit(X)
    pv = ae._pv
    pv.params[:] = np.random.default_rng(1).normal(scale=0.7, size=pv.params.size)
    layers = ae._layers()
    dw, db = pv.views(pv.grads)
    for i, layer in enumerate(layers):
        layer.dW, layer.db = dw[i], db[i]
        layer.allocate(len(X), np.float64, need_input_grad=i > 0)
    l2 = 0.2
    buf = np.empty_like(X), np.empty_like(X)
    loss = _backprop(layers, ae._head(), X, X, None, *buf, pv, l2)
    analytic = pv.grads.copy()
    np.testing.assert_allclose(
        loss + 0.5 * l2 * sum((W**2).sum() for W in ae.coefs_),
        reference_loss(ae.coefs_, ae.intercepts_, X, l2), rtol=1e-10)
    numeric = np.empty_like(analytic)
    eps = 1e-6
    for j in range(pv.params.size):
        old = pv.params[j]
        pv.params[j] = old + eps
        up = reference_loss(ae.coefs_, ae.intercepts_, X, l2)
        pv.params[j] = old - eps
        down = reference_loss(ae.coefs_, ae.intercepts_, X, l2)
        pv.params[j] = old
        numeric[j] = (up - down) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_reconstructs_what_it_learned_and_not_what_it_did_not():
    X, basis = low_rank(n=600)
    ae = SigmoidAutoencoder(hidden_layers=(4,), random_state=0).fit(X[:500])
    assert ae.loss_curve_[-1] < 0.25 * ae.loss_curve_[0]
    normal = ae.score_samples(X[500:])
    # same per-feature spread, but no longer on the learned 2-D surface
    shuffled = np.random.default_rng(1).permuted(X[500:], axis=1)
    assert np.median(ae.score_samples(shuffled)) > 5 * np.median(normal)
    assert ae.score(X[500:]) == pytest.approx(-normal.mean(), rel=1e-5)


def test_onnx_score_matches_numpy():
    X, _ = low_rank(n=300, d=12)
    ae = SigmoidAutoencoder(hidden_layers=(8, 3, 8), max_epochs=30, random_state=2).fit(X)
    g = GraphBuilder("ae")
    score = g.rename(ae.to_onnx(g, "x"), "score")
    model = g.model([float_input("x", ["batch", 12])], [float_input("score", ["batch"])])
    names = [n.name for n in model.graph.node]
    assert "autoencoder_reconstruction" in names and "autoencoder_dense_1_sigmoid" in names
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    test = np.vstack([X[:50], X[:5] * 4]).astype(np.float32)
    (got,) = sess.run([score], {"x": test})
    np.testing.assert_allclose(got, ae.score_samples(test), rtol=1e-4, atol=1e-6)


def test_same_seed_same_autoencoder():
    X, _ = low_rank(n=200)
    a = SigmoidAutoencoder(hidden_layers=(3,), max_epochs=5, random_state=4).fit(X)
    b = SigmoidAutoencoder(hidden_layers=(3,), max_epochs=5, random_state=4).fit(X)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])
    assert [W.shape for W in a.coefs_] == [(10, 3), (3, 10)]


def test_an_autoencoder_is_not_a_classifier():
    X, _ = low_rank(n=50)
    ae = SigmoidAutoencoder(hidden_layers=(3,), max_epochs=2).fit(X)
    assert not isinstance(ae, SigmoidNetwork)
    for method in ("predict", "predict_proba", "decision_function"):
        assert not hasattr(ae, method)
    assert repr(ae).startswith("SigmoidAutoencoder(")
    with pytest.raises(ValueError, match="features"):
        ae.score_samples(X[:, :4])
