"""Layers of a sigmoid network: each forward pass sits next to its backward pass.

A network is a stack of :class:`Dense` layers (affine map + activation) under one
*head* that turns the last layer's pre-activations into outputs and a loss. The head is
separate from the hidden stack so the same layers can serve other heads later (a mean
squared error head for an autoencoder of sigmoid layers, layer-wise pretraining).

All parameters of a stack live in ONE flat vector (:class:`ParameterVector`); layers hold
views into it and into a flat gradient vector of the same layout, so an optimizer updates
everything with a handful of in-place vector operations. Weights come first and biases
after them, so the L2 penalty is one slice.

Shapes: a batch is ``[m, n_in]``; ``W`` is ``[n_in, n_out]``; ``b`` is ``[n_out]``.
"""

from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------------- activations
# Each activation is a pair: the function, and its derivative written in terms of the
# function's OUTPUT (what backpropagation has at hand without keeping the pre-activation).


def sigmoid(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Logistic sigmoid ``1 / (1 + exp(-z))``, computed as ``0.5 * (1 + tanh(z / 2))``.

    The tanh form never overflows (``exp(-z)`` does for ``z < -88`` in float32) and is a
    single vectorised transcendental call, which matters in the training loop.
    """
    out = np.multiply(z, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def sigmoid_grad_from_output(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """d sigmoid(z) / dz expressed with ``a = sigmoid(z)``: ``a * (1 - a)``."""
    np.subtract(1.0, a, out=out)
    out *= a
    return out


def identity(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The identity (an output layer's pre-activation, handed to a head)."""
    if out is None or out is z:
        return z
    np.copyto(out, z)
    return out


def identity_grad_from_output(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """d identity / dz = 1."""
    out.fill(1.0)
    return out


ACTIVATIONS = {
    "sigmoid": (sigmoid, sigmoid_grad_from_output),
    "identity": (identity, identity_grad_from_output),
}


# --------------------------------------------------------------------------- parameters


class ParameterVector:
    """One flat parameter vector and its gradient, carved into per-layer views.

    Parameters
    ----------
    shapes : list of (int, int)
        ``(n_in, n_out)`` per layer, input side first.
    dtype : numpy dtype
        Floating type of parameters and gradients.
    """

    def __init__(self, shapes: list[tuple[int, int]], dtype):
        self.shapes = list(shapes)
        self.n_weights = sum(i * o for i, o in shapes)
        size = self.n_weights + sum(o for _, o in shapes)
        self.params = np.zeros(size, dtype=dtype)
        self.grads = np.zeros(size, dtype=dtype)

    def views(self, array: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``(weights, biases)`` lists of views into ``array`` (params, grads or a copy)."""
        weights, biases = [], []
        w_at, b_at = 0, self.n_weights
        for n_in, n_out in self.shapes:
            weights.append(array[w_at:w_at + n_in * n_out].reshape(n_in, n_out))
            biases.append(array[b_at:b_at + n_out])
            w_at += n_in * n_out
            b_at += n_out
        return weights, biases


def glorot_uniform(n_in: int, n_out: int, rng: np.random.Generator, gain: float = 1.0):
    """Glorot/Xavier uniform weights, ``U(-r, r)`` with ``r = gain * sqrt(6 / (n_in + n_out))``.

    Keeps the variance of pre-activations and of back-propagated gradients roughly equal
    across layers, so sigmoid units start in their responsive middle range rather than
    saturated (where ``a * (1 - a)`` and thus learning vanishes).
    """
    r = gain * np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-r, r, size=(n_in, n_out))


# --------------------------------------------------------------------------- layers


class Dense:
    """Affine map and activation: ``a = f(x @ W + b)``.

    Parameters
    ----------
    n_in, n_out : int
        Input and output widths.
    activation : {"sigmoid", "identity"}
        ``f``; the last layer of a network is ``"identity"`` and its head does the rest.

    Notes
    -----
    Call :meth:`bind` to attach parameter/gradient views, and :meth:`allocate` to
    preallocate training buffers for batches of up to ``batch_size`` rows. Without buffers
    (inference), :meth:`forward` allocates its result.
    """

    def __init__(self, n_in: int, n_out: int, activation: str = "sigmoid"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.n_in, self.n_out, self.activation = n_in, n_out, activation
        self.f, self.df = ACTIVATIONS[activation]
        self.W = self.b = self.dW = self.db = None
        self._a = self._dx = self._tmp = self._ones = None
        self.x = self.a = None

    def bind(self, W, b, dW, db) -> None:
        """Use these views (into the flat parameter and gradient vectors)."""
        self.W, self.b, self.dW, self.db = W, b, dW, db

    def allocate(self, batch_size: int, dtype, need_input_grad: bool) -> None:
        """Preallocate output, derivative and input-gradient buffers for training."""
        self._a = np.empty((batch_size, self.n_out), dtype)
        self._tmp = np.empty((batch_size, self.n_out), dtype)
        self._dx = np.empty((batch_size, self.n_in), dtype) if need_input_grad else None
        self._ones = np.ones(batch_size, dtype)  # column sums as a BLAS product

    # forward: z = x W + b ; a = f(z)
    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        m = x.shape[0]
        z = np.matmul(x, self.W, out=self._a[:m]) if train else x @ self.W
        z += self.b
        a = self.f(z, out=z)
        if train:
            self.x, self.a = x, a
        return a

    # backward: dz = da * f'(z) ; dW = x^T dz ; db = sum_rows dz ; dx = dz W^T
    def backward(self, da: np.ndarray) -> np.ndarray | None:
        """Gradients of the loss w.r.t. ``W`` and ``b`` (written into the gradient vector)
        from ``da`` = dL/da of the last :meth:`forward`; returns dL/dx (or ``None`` for the
        first layer). ``da`` may be overwritten.
        """
        m = da.shape[0]
        if self.activation == "identity":
            dz = da
        else:
            dz = np.multiply(da, self.df(self.a, out=self._tmp[:m]), out=da)
        np.matmul(self.x.T, dz, out=self.dW)
        np.matmul(self._ones[:m], dz, out=self.db)
        if self._dx is None:
            return None
        return np.matmul(dz, self.W.T, out=self._dx[:m])


# --------------------------------------------------------------------------- heads
# A head turns the output layer's pre-activations ``z`` into outputs and defines the loss:
#   forward(z)                  -> outputs (inference)
#   forward_loss(z, y, w, out)  -> (outputs, weighted mean loss)  (training; one pass)
#   backward(outputs, y, w)     -> dL/dz
# ``w`` holds per-row weights summing to 1, or is None for equal weights.


def _weighted_mean(per_row: np.ndarray, w: np.ndarray | None) -> float:
    return float(per_row.sum() / per_row.shape[0] if w is None else per_row @ w)


# Row reductions over the handful of output columns are slow in numpy (~20 us for 200 x 4,
# an inner loop of length 4 per row); these two are vectorised along the rows instead.
def row_max(z: np.ndarray) -> np.ndarray:
    """``z.max(axis=1)``: for few columns, a maximum over whole columns at a time."""
    if z.shape[1] > 8:
        return z.max(axis=1)
    m = z[:, 0].copy()
    for k in range(1, z.shape[1]):
        np.maximum(m, z[:, k], out=m)
    return m


def row_sum(z: np.ndarray) -> np.ndarray:
    """``z.sum(axis=1)`` as a matrix-vector product (BLAS)."""
    return z @ np.ones(z.shape[1], z.dtype)


class SoftmaxCrossEntropy:
    """Softmax over ``K`` units with the multinomial log-loss (targets one-hot)."""

    name = "softmax"

    # forward: p = exp(z - max z) / sum exp(z - max z)   (shifting by max z avoids overflow)
    @staticmethod
    def forward(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        out = np.subtract(z, row_max(z)[:, None], out=out)
        np.exp(out, out=out)
        out /= row_sum(out)[:, None]
        return out

    # loss: -sum_k y_k log p_k = log sum_k exp(s_k) - s . y  with s = z - max z
    # (exact: never takes the log of a probability that rounded to 0)
    @staticmethod
    def forward_loss(z, y, w, out):
        s = np.subtract(z, row_max(z)[:, None], out=out)
        s_y = row_sum(s * y)
        np.exp(s, out=s)
        total = row_sum(s)
        s /= total[:, None]
        return s, _weighted_mean(np.log(total) - s_y, w)

    # backward: dL/dz = p - y (per row), weighted
    @staticmethod
    def backward(p: np.ndarray, y: np.ndarray, w: np.ndarray | None, out: np.ndarray):
        np.subtract(p, y, out=out)
        if w is None:
            out *= 1.0 / p.shape[0]
        else:
            out *= w[:, None]
        return out


class SigmoidCrossEntropy:
    """Independent sigmoid units with the binary log-loss per unit (summed over units).

    One unit for a binary problem; ``K`` one-vs-rest units otherwise.
    """

    name = "sigmoid"

    # forward: p = sigmoid(z)
    @staticmethod
    def forward(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return sigmoid(z, out=out)

    # loss: -(y log p + (1-y) log(1-p)) = softplus(z) - y z = max(z,0) - y z + log1p(exp(-|z|))
    @staticmethod
    def forward_loss(z, y, w, out):
        per_unit = np.maximum(z, 0) - y * z + np.log1p(np.exp(-np.abs(z)))
        return sigmoid(z, out=out), _weighted_mean(row_sum(per_unit), w)

    # backward: dL/dz = p - y (per unit), weighted
    backward = staticmethod(SoftmaxCrossEntropy.backward)


HEADS = {"softmax": SoftmaxCrossEntropy, "sigmoid": SigmoidCrossEntropy}
