"""Gradient-descent optimizers that update one flat parameter vector in place.

Every optimizer keeps its state (velocity, moments) as flat vectors of the parameter
vector's size and dtype, allocated once, and updates with in-place vector operations:
no per-layer Python lists and no allocation per step.
"""

from __future__ import annotations

import numpy as np


class SGD:
    """Stochastic gradient descent with (optionally Nesterov) momentum.

    ``v <- momentum * v - lr * g`` then ``theta <- theta + v`` (classical momentum) or
    ``theta <- theta + momentum * v - lr * g`` (Nesterov, in the form of Sutskever et al.
    2013 that needs no look-ahead gradient).

    Parameters
    ----------
    size : int
        Length of the parameter vector.
    learning_rate : float
        Step size.
    momentum : float
        In ``[0, 1)``; ``0`` is plain SGD.
    nesterov : bool
        Use Nesterov momentum.
    dtype : numpy dtype
        dtype of the state.
    """

    def __init__(self, size: int, learning_rate: float = 0.1, momentum: float = 0.9,
                 nesterov: bool = True, dtype=np.float32):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.velocity = np.zeros(size, dtype)
        self._step = np.empty(size, dtype)

    def reset(self) -> None:
        """Forget the momentum (after the parameters were moved back)."""
        self.velocity[...] = 0

    def step(self, params: np.ndarray, grads: np.ndarray) -> None:
        """Update ``params`` in place from ``grads``."""
        v, s = self.velocity, self._step
        np.multiply(grads, -self.learning_rate, out=s)  # s = -lr g
        v *= self.momentum
        v += s                                          # v = mu v - lr g
        if self.nesterov:
            s += self.momentum * v                      # mu v - lr g
            params += s
        else:
            params += v


class Adam:
    """Adam (Kingma & Ba 2015) with bias correction folded into the step size.

    ``m <- b1 m + (1-b1) g``; ``v <- b2 v + (1-b2) g^2``;
    ``theta <- theta - lr_t m / (sqrt(v) + eps)``, ``lr_t = lr sqrt(1-b2^t) / (1-b1^t)``.

    Parameters
    ----------
    size : int
        Length of the parameter vector.
    learning_rate : float
        Step size.
    beta_1, beta_2 : float
        Decay rates of the first and second moment estimates, in ``[0, 1)``.
    epsilon : float
        Added to the denominator for numerical stability.
    dtype : numpy dtype
        dtype of the state.
    """

    def __init__(self, size: int, learning_rate: float = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-8, dtype=np.float32):
        for name, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {beta!r}")
        self.learning_rate = float(learning_rate)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.t = 0
        self.m = np.zeros(size, dtype)
        self.v = np.zeros(size, dtype)
        self._tmp = np.empty(size, dtype)

    def reset(self) -> None:
        """Forget the moment estimates (after the parameters were moved back)."""
        self.t = 0
        self.m[...] = 0
        self.v[...] = 0

    def step(self, params: np.ndarray, grads: np.ndarray) -> None:
        """Update ``params`` in place from ``grads``."""
        self.t += 1
        b1, b2, m, v, tmp = self.beta_1, self.beta_2, self.m, self.v, self._tmp
        m *= b1
        m += np.multiply(grads, 1.0 - b1, out=tmp)
        np.multiply(grads, grads, out=tmp)
        tmp *= 1.0 - b2
        v *= b2
        v += tmp
        lr_t = self.learning_rate * np.sqrt(1.0 - b2**self.t) / (1.0 - b1**self.t)
        np.sqrt(v, out=tmp)
        tmp += self.epsilon
        np.divide(m, tmp, out=tmp)
        tmp *= -lr_t
        params += tmp


OPTIMIZERS = {"sgd": SGD, "adam": Adam}
