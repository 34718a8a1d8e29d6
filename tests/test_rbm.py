"""RBM sanity checks: energies against brute force, gradients against finite differences,
and training that raises the exact likelihood of a tiny model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from trainer.rbm import RBM, pretrain_layers, sigmoid


def random_rbm(visible: str, n_visible=5, n_hidden=4, seed=0) -> RBM:
    rng = np.random.default_rng(seed)
    rbm = RBM(n_hidden=n_hidden, visible=visible, dtype=np.float64)
    rbm.components_ = rng.normal(0, 0.7, (n_hidden, n_visible))
    rbm.intercept_hidden_ = rng.normal(0, 0.5, n_hidden)
    rbm.intercept_visible_ = rng.normal(0, 0.5, n_visible)
    rbm.n_features_in_ = n_visible
    return rbm


def visible_batch(visible: str, n=7, d=5, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if visible == "bernoulli":
        return (rng.random((n, d)) < 0.4).astype(np.float64)
    return rng.normal(0, 1.3, (n, d))


def all_states(n: int) -> np.ndarray:
    return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_free_energy_sums_the_hidden_units_out(visible):
    rbm = random_rbm(visible)
    V = visible_batch(visible)
    H = all_states(rbm.n_hidden)  # all 16 hidden configurations
    # E for every (v, h) pair: [n_v, n_h]
    E = np.stack([rbm.energy(np.repeat(v[None], len(H), 0), H) for v in V])
    brute = -np.logaddexp.reduce(-E, axis=1)
    np.testing.assert_allclose(rbm.free_energy(V), brute, rtol=1e-10, atol=1e-10)
    # and p(h_j = 1 | v) is the Boltzmann marginal over those configurations
    p = np.exp(-E - np.logaddexp.reduce(-E, axis=1, keepdims=True))
    np.testing.assert_allclose(rbm.hidden_proba(V), p @ H, rtol=1e-10, atol=1e-12)


def test_gaussian_visible_conditional_is_unit_normal_around_the_mean():
    rbm = random_rbm("gaussian")
    H = all_states(rbm.n_hidden)[[1, 6, 15]]
    mean = rbm.visible_mean(H)
    V = mean + np.random.default_rng(3).normal(size=mean.shape)
    # E(v, h) - E(mean, h) = |v - mean|^2 / 2: exactly a unit-variance Gaussian in v
    np.testing.assert_allclose(rbm.energy(V, H) - rbm.energy(mean, H),
                               0.5 * ((V - mean) ** 2).sum(axis=1), rtol=1e-10)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_free_energy_gradient_matches_finite_differences(visible):
    rbm = random_rbm(visible)
    V = visible_batch(visible)
    analytic = rbm.free_energy_gradient(V)
    params = [rbm.components_, rbm.intercept_visible_, rbm.intercept_hidden_]
    eps = 1e-6
    for param, grad in zip(params, analytic, strict=True):
        numeric = np.zeros_like(param)
        for idx in np.ndindex(param.shape):
            old = param[idx]
            param[idx] = old + eps
            up = rbm.free_energy(V).mean()
            param[idx] = old - eps
            down = rbm.free_energy(V).mean()
            param[idx] = old
            numeric[idx] = -(up - down) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def exact_log_likelihood(rbm: RBM, V: np.ndarray) -> float:
    states = all_states(rbm.n_features_in_)
    log_z = np.logaddexp.reduce(-rbm.free_energy(states))
    return float((-rbm.free_energy(V) - log_z).mean())


def test_training_raises_the_exact_likelihood():
    rng = np.random.default_rng(0)
    prototypes = np.array([[1, 1, 1, 0, 0, 0, 1, 0], [0, 0, 0, 1, 1, 1, 0, 1]], float)
    V = prototypes[rng.integers(2, size=400)]
    flip = rng.random(V.shape) < 0.05
    V = np.abs(V - flip)
    rbm = RBM(n_hidden=4, visible="bernoulli", n_epochs=0, dtype=np.float64, random_state=1)
    rbm.fit(V)
    before = exact_log_likelihood(rbm, V)
    rbm.set_params(n_epochs=30).fit(V)
    after = exact_log_likelihood(rbm, V)
    # Independent bits at the data's marginals: what a model without hidden units can do.
    p = V.mean(axis=0)
    independent = float((V * np.log(p) + (1 - V) * np.log(1 - p)).sum(axis=1).mean())
    assert after > before + 1.0
    assert after > independent + 1.0, (before, after, independent)


def test_gaussian_rbm_learns_low_rank_structure():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2000, 3))
    X = z @ rng.normal(size=(3, 12)) + 0.1 * rng.normal(size=(2000, 12))
    X = (X - X.mean(0)) / X.std(0)
    rbm = RBM(n_hidden=32, visible="gaussian", n_epochs=15, random_state=0).fit(X)
    errors = rbm.reconstruction_error_
    assert errors[-1] < 0.6 * errors[0], errors
    # The deterministic reconstruction explains most of the variance of unit-variance data.
    assert ((rbm.reconstruct(X) - X) ** 2).mean() < 0.35


def test_same_seed_same_rbm():
    X = visible_batch("gaussian", n=200, d=6, seed=4)
    a = RBM(n_hidden=8, visible="gaussian", n_epochs=3, random_state=5).fit(X)
    b = RBM(n_hidden=8, visible="gaussian", n_epochs=3, random_state=5).fit(X)
    c = RBM(n_hidden=8, visible="gaussian", n_epochs=3, random_state=6).fit(X)
    np.testing.assert_array_equal(a.components_, b.components_)
    assert not np.array_equal(a.components_, c.components_)


def test_pretrained_layers_do_not_depend_on_input_scale():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    shifted = X * np.array([1, 10, 0.1, 100, 1, 3]) + 7.0
    a = pretrain_layers(X, (5, 3), n_epochs=3, dtype=np.float64, random_state=0)
    b = pretrain_layers(shifted, (5, 3), n_epochs=3, dtype=np.float64, random_state=0)
    assert [w.shape for w, _ in b] == [(6, 5), (5, 3)]
    # The standardisation is folded into the first layer: same hidden units either way.
    ha = sigmoid(X @ a[0][0] + a[0][1])
    hb = sigmoid(shifted @ b[0][0] + b[0][1])
    np.testing.assert_allclose(ha, hb, atol=1e-8)
    np.testing.assert_allclose(a[1][0], b[1][0], atol=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "X", "message"),
    [
        ({"visible": "binary"}, np.zeros((3, 2)), "visible must be one of"),
        ({"visible": "bernoulli"}, np.full((3, 2), 2.0), r"in \[0, 1\].*gaussian"),
        ({"visible": "gaussian"}, np.array([[np.nan, 1.0]]), "NaN"),
        ({"visible": "gaussian"}, np.zeros((0, 3)), "non-empty 2-D"),
        ({"n_hidden": 0}, np.zeros((3, 2)), "n_hidden"),
    ],
)
def test_bad_input_is_named(kwargs, X, message):
    with pytest.raises(ValueError, match=message):
        RBM(**kwargs).fit(X)


def test_transform_before_fit_is_a_clear_error():
    with pytest.raises(RuntimeError, match="not fitted"):
        RBM().transform(np.zeros((2, 2)))
