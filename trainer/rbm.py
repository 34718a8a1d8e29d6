"""Restricted Boltzmann machines and greedy layer-wise pretraining (deep belief networks).

An RBM is one layer of sigmoid units ``h`` connected to inputs ``v`` with weights ``W``
(``n_hidden x n_visible``), visible biases ``b`` and hidden biases ``c``. Its energy is

- Bernoulli visible units (inputs in [0, 1], e.g. the hidden probabilities of the layer
  below):  ``E(v, h) = -b.v - c.h - h.W v``
- Gaussian visible units with unit variance (standardised real-valued features):
  ``E(v, h) = |v - b|^2 / 2 - c.h - h.W v``

and summing the hidden units out gives the free energy
``F(v) = -b.v - sum_j softplus(c_j + W_j.v)`` (Bernoulli) or
``F(v) = |v - b|^2 / 2 - sum_j softplus(c_j + W_j.v)`` (Gaussian).
The hidden units are the same sigmoid units a :class:`~trainer.network.SigmoidNetwork`
layer computes, ``p(h = 1 | v) = sigmoid(c + W v)``, so a trained RBM is a layer's
initial weights. Training follows the log-likelihood gradient
``-dF/dtheta (data) + dF/dtheta (model)``, approximated by contrastive divergence: the model
term is taken at a reconstruction ``k`` Gibbs steps away from the data (Hinton 2002; the
recipes of Hinton's "A practical guide to training RBMs", 2010).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

VISIBLE_TYPES = ("bernoulli", "gaussian")
# Gaussian visible units are far less forgiving: Hinton's guide advises a learning rate
# one to two orders of magnitude smaller than for binary units.
DEFAULT_LEARNING_RATE = {"bernoulli": 0.05, "gaussian": 0.005}


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def softplus(z: np.ndarray) -> np.ndarray:
    """``log(1 + exp(z))`` without overflow."""
    return np.logaddexp(0.0, z)


class RBM:
    """One restricted Boltzmann machine trained with contrastive divergence (CD-k).

    Parameters
    ----------
    n_hidden : int
        Hidden sigmoid units.
    visible : {"bernoulli", "gaussian"}
        Visible unit type: ``"gaussian"`` (unit variance) for standardised real-valued
        inputs, ``"bernoulli"`` for values in [0, 1].
    learning_rate : float or None
        Step size; ``None`` picks 0.05 for Bernoulli and 0.005 for Gaussian inputs.
    n_epochs : int
        Passes over the data.
    batch_size : int
        Samples per update.
    cd_k : int
        Gibbs steps of contrastive divergence.
    momentum : float
        Momentum of the updates (0.5 for the first 5 epochs, then this value, as the
        guide recommends).
    weight_decay : float
        L2 penalty on the weights.
    dtype : numpy dtype
        float32 (fast) or float64 (gradient checks).
    random_state : int or None
        Seed for initialisation, shuffling and Gibbs sampling.

    Attributes
    ----------
    components_ : ndarray of shape (n_hidden, n_visible)
        Weights ``W``.
    intercept_hidden_ : ndarray of shape (n_hidden,)
    intercept_visible_ : ndarray of shape (n_visible,)
    reconstruction_error_ : list of float
        Mean squared one-step reconstruction error per epoch (a rough progress measure;
        it is not what CD optimises).
    n_features_in_ : int
    """

    def __init__(
        self,
        *,
        n_hidden: int = 64,
        visible: str = "bernoulli",
        learning_rate: float | None = None,
        n_epochs: int = 20,
        batch_size: int = 32,
        cd_k: int = 1,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        dtype=np.float32,
        random_state: int | None = 0,
    ):
        self.n_hidden = n_hidden
        self.visible = visible
        self.learning_rate = learning_rate
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.cd_k = cd_k
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.dtype = dtype
        self.random_state = random_state

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        names = ("n_hidden", "visible", "learning_rate", "n_epochs", "batch_size", "cd_k",
                 "momentum", "weight_decay", "dtype", "random_state")
        return {k: getattr(self, k) for k in names}

    def set_params(self, **params) -> RBM:
        for key, value in params.items():
            if key not in self.get_params():
                raise ValueError(f"RBM has no parameter {key!r}")
            setattr(self, key, value)
        return self

    # --- the two conditionals, side by side -------------------------------------------
    def hidden_proba(self, V: np.ndarray) -> np.ndarray:
        """Up: ``p(h = 1 | v) = sigmoid(c + W v)`` for each row of ``V``."""
        return sigmoid(V @ self.components_.T + self.intercept_hidden_)

    def visible_mean(self, H: np.ndarray) -> np.ndarray:
        """Down: ``E[v | h]``: ``sigmoid(b + W^T h)`` (Bernoulli) or ``b + W^T h`` (Gaussian)."""
        z = H @ self.components_ + self.intercept_visible_
        return sigmoid(z) if self.visible == "bernoulli" else z

    def sample_hidden(self, V: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = self.hidden_proba(V)
        return (rng.random(p.shape) < p).astype(p.dtype)

    def sample_visible(self, H: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mean = self.visible_mean(H)
        if self.visible == "bernoulli":
            return (rng.random(mean.shape) < mean).astype(mean.dtype)
        return mean + rng.standard_normal(mean.shape).astype(mean.dtype)

    # --- energies ------------------------------------------------------------------
    def energy(self, V: np.ndarray, H: np.ndarray) -> np.ndarray:
        """Joint energy ``E(v, h)`` of each row pair, shape ``(n,)``."""
        interaction = np.einsum("nj,jv,nv->n", H, self.components_, V)
        return self._visible_term(V) - H @ self.intercept_hidden_ - interaction

    def free_energy(self, V: np.ndarray) -> np.ndarray:
        """``F(v) = -log sum_h exp(-E(v, h))``, shape ``(n,)``; low for likely inputs."""
        pre = V @ self.components_.T + self.intercept_hidden_
        return self._visible_term(V) - softplus(pre).sum(axis=1)

    def _visible_term(self, V: np.ndarray) -> np.ndarray:
        if self.visible == "bernoulli":
            return -V @ self.intercept_visible_
        return 0.5 * ((V - self.intercept_visible_) ** 2).sum(axis=1)

    def free_energy_gradient(self, V: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``-d mean(F(V)) / d(W, b, c)``: the statistics of one phase of CD.

        The log-likelihood gradient is this at the data minus its expectation under the
        model; contrastive divergence evaluates the second term at reconstructions.
        """
        H = self.hidden_proba(V)
        n = len(V)
        dW = H.T @ V / n
        db = (V if self.visible == "bernoulli" else V - self.intercept_visible_).mean(axis=0)
        dc = H.mean(axis=0)
        return dW, db, dc

    def contrastive_divergence(
        self, V: np.ndarray, rng: np.random.Generator
    ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
        """CD-k estimate of the log-likelihood gradient for a batch, and the reconstruction.

        Hidden states are sampled on the way down (they carry the information bottleneck);
        the statistics use probabilities and visible means (less noise, same expectation
        to first order, as the guide recommends).
        """
        Vk = V
        for _ in range(self.cd_k):
            Vk = self.visible_mean(self.sample_hidden(Vk, rng))
        pos = self.free_energy_gradient(V)
        neg = self.free_energy_gradient(Vk)
        return tuple(p - q for p, q in zip(pos, neg, strict=True)), Vk

    # --- training --------------------------------------------------------------------
    def fit(self, X, y=None) -> RBM:
        """Train on the rows of ``X`` (``y`` is ignored).

        Raises
        ------
        ValueError
            On bad parameters, non-finite input, or Bernoulli input outside [0, 1].
        """
        X = self._check_X(X)
        self._init_params(X)
        return self._train(X, self.n_epochs)

    def partial_fit(self, X, y=None) -> RBM:
        """One more epoch over ``X`` (initialising on the first call)."""
        X = self._check_X(X)
        if not hasattr(self, "components_"):
            self._init_params(X)
        return self._train(X, 1)

    def _check_X(self, X) -> np.ndarray:
        if self.visible not in VISIBLE_TYPES:
            raise ValueError(f"visible must be one of {VISIBLE_TYPES}, got {self.visible!r}")
        if self.n_hidden < 1 or self.cd_k < 1 or self.batch_size < 1 or self.n_epochs < 0:
            raise ValueError(
                "n_hidden, cd_k and batch_size must be >= 1 and n_epochs >= 0, got "
                f"{self.n_hidden}, {self.cd_k}, {self.batch_size}, {self.n_epochs}"
            )
        X = np.asarray(X, dtype=self.dtype)
        if X.ndim != 2 or X.size == 0:
            raise ValueError(f"X must be a non-empty 2-D array [samples, features], got {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or infinity")
        if self.visible == "bernoulli" and (X.min() < 0 or X.max() > 1):
            raise ValueError(
                f"Bernoulli visible units need inputs in [0, 1], got [{X.min():.3g}, "
                f"{X.max():.3g}]; use visible='gaussian' for standardised real values"
            )
        if hasattr(self, "n_features_in_") and X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features but the RBM has {self.n_features_in_} visible units"
            )
        return X

    def _init_params(self, X: np.ndarray) -> None:
        rng = np.random.default_rng(self.random_state)
        self._rng = rng
        d = X.shape[1]
        self.n_features_in_ = d
        self.components_ = (0.01 * rng.standard_normal((self.n_hidden, d))).astype(self.dtype)
        self.intercept_hidden_ = np.zeros(self.n_hidden, self.dtype)
        mean = X.mean(axis=0)
        if self.visible == "bernoulli":
            # Start the visible biases at the log-odds of the data (the guide's advice).
            p = np.clip(mean, 1e-3, 1 - 1e-3)
            self.intercept_visible_ = np.log(p / (1 - p)).astype(self.dtype)
        else:
            self.intercept_visible_ = mean.astype(self.dtype)
        self._velocity = [np.zeros_like(self.components_),
                          np.zeros_like(self.intercept_visible_),
                          np.zeros_like(self.intercept_hidden_)]
        self.reconstruction_error_ = []
        self._epochs_done = 0

    def _train(self, X: np.ndarray, n_epochs: int) -> RBM:
        lr = self.learning_rate or DEFAULT_LEARNING_RATE[self.visible]
        rng = self._rng
        params = [self.components_, self.intercept_visible_, self.intercept_hidden_]
        for _ in range(n_epochs):
            momentum = 0.5 if self._epochs_done < 5 else self.momentum
            order = rng.permutation(len(X))
            err = 0.0
            for start in range(0, len(X), self.batch_size):
                V = X[order[start : start + self.batch_size]]
                grads, Vk = self.contrastive_divergence(V, rng)
                err += float(((V - Vk) ** 2).sum())
                for i, (p, g, v) in enumerate(zip(params, grads, self._velocity, strict=True)):
                    if i == 0:
                        g = g - self.weight_decay * p
                    v *= momentum
                    v += lr * g
                    p += v  # gradient ascent on the log-likelihood
            self.reconstruction_error_.append(err / X.size)
            self._epochs_done += 1
            log.debug("RBM epoch %d: reconstruction error %.4f",
                      self._epochs_done, self.reconstruction_error_[-1])
        return self

    def transform(self, X) -> np.ndarray:
        """Hidden probabilities ``p(h = 1 | v)``: the features the next layer sees."""
        if not hasattr(self, "components_"):
            raise RuntimeError("this RBM is not fitted yet; call fit(X) first")
        return self.hidden_proba(np.asarray(X, dtype=self.dtype))

    def reconstruct(self, X) -> np.ndarray:
        """One deterministic up-down pass: ``E[v | p(h | v)]``."""
        return self.visible_mean(self.transform(X))


def pretrain_layers(
    X,
    hidden_layers: tuple[int, ...],
    *,
    n_epochs: int = 20,
    batch_size: int = 32,
    learning_rate: float | None = None,
    cd_k: int = 1,
    dtype=np.float32,
    random_state: int | None = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Greedy layer-wise pretraining of a stack of sigmoid layers (a deep belief network).

    The first layer is a Gaussian-Bernoulli RBM on the inputs, standardised inside this
    function (the standardisation is then folded into the returned weights, so they apply
    to ``X`` as given); every layer above is a Bernoulli RBM on the hidden probabilities of
    the layer below.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Unlabelled inputs (labelled ones may be included).
    hidden_layers : tuple of int
        Units per hidden layer, bottom first.
    n_epochs, batch_size, learning_rate, cd_k, dtype
        Passed to each :class:`RBM` (``learning_rate=None`` picks the default per type).
    random_state : int or None
        Seed; layer ``i`` uses ``random_state + i``.

    Returns
    -------
    list of (coef, intercept)
        Per hidden layer, ``coef`` of shape ``(n_in, n_out)`` and ``intercept`` of shape
        ``(n_out,)``, so that ``sigmoid(x @ coef + intercept)`` is the layer's output,
        the convention of ``SigmoidNetwork.coefs_``/``intercepts_``.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) == 0:
        raise ValueError(f"X must be a non-empty 2-D array [samples, features], got {X.shape}")
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)  # constant features carry nothing to learn
    inputs = (X - mean) / std
    layers = []
    for i, n_hidden in enumerate(hidden_layers):
        rbm = RBM(
            n_hidden=int(n_hidden),
            visible="gaussian" if i == 0 else "bernoulli",
            learning_rate=learning_rate,
            n_epochs=n_epochs,
            batch_size=batch_size,
            cd_k=cd_k,
            dtype=dtype,
            random_state=None if random_state is None else random_state + i,
        ).fit(inputs)
        coef = rbm.components_.T.astype(np.float64)
        intercept = rbm.intercept_hidden_.astype(np.float64)
        if i == 0:
            # sigmoid(c + W (x - m) / s) = sigmoid((c - W (m / s)) + (W / s) x)
            intercept = intercept - (mean / std) @ coef
            coef = coef / std[:, None]
        layers.append((coef.astype(dtype), intercept.astype(dtype)))
        inputs = rbm.transform(inputs)
    return layers
