"""An autoencoder of sigmoid layers: the anomaly detector that learns what normal looks like.

It shares :class:`~trainer.network.BaseSigmoidNetwork` with the classifier
(:class:`~trainer.network.SigmoidNetwork`) and its targets are its inputs: the same
:class:`~trainer.layers.Dense` sigmoid layers, flat parameter vector, optimizers and
training loop, under a mean-squared-error head instead of the log-loss. The hidden layers
narrow to a bottleneck, so the network can only reconstruct inputs that resemble its
training data; the anomaly score of a feature vector is its reconstruction error.
"""

from __future__ import annotations

import numpy as np

from trainer.layers import SoftmaxCrossEntropy
from trainer.network import BaseSigmoidNetwork


class MeanSquaredError:
    """Identity outputs with the loss ``mean_k (z_k - y_k)^2 / 2`` per row (an autoencoder head).

    The mean over the ``K`` features (not the sum) keeps the loss on the scale of one
    standardised feature whatever ``K`` is, so the network's stopping tolerance ``tol``
    means the same for 20 features as for 200.
    """

    name = "mse"

    # forward: the output layer's pre-activation is the reconstruction
    @staticmethod
    def forward(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            return z.copy()
        np.copyto(out, z)
        return out

    # loss: |z - y|^2 / (2K) per row, (weighted) mean over rows
    @staticmethod
    def loss(z: np.ndarray, p: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> float:
        per_row = 0.5 * np.einsum("ij,ij->i", p - y, p - y) / p.shape[1]
        return float(per_row.mean() if w is None else per_row @ w)

    # forward and loss in one call, as the training loop asks a head (trainer.layers)
    @classmethod
    def forward_loss(cls, z, y, w, out):
        p = cls.forward(z, out=out)
        return p, cls.loss(z, p, y, w)

    # backward: dL/dz = (z - y) / K per row, weighted as the cross-entropy heads weight
    @staticmethod
    def backward(p: np.ndarray, y: np.ndarray, w: np.ndarray | None, out: np.ndarray):
        SoftmaxCrossEntropy.backward(p, y, w, out)
        out *= 1.0 / p.shape[1]
        return out


class SigmoidAutoencoder(BaseSigmoidNetwork):
    """A sigmoid network trained to reproduce its input (``fit(X)`` needs no labels).

    Takes the parameters of :class:`~trainer.network.SigmoidNetwork` (``output``,
    ``class_weight`` and ``early_stopping`` do not apply: training always monitors the
    training loss). ``hidden_layers`` should narrow to a bottleneck smaller than the
    number of features, e.g. ``(32, 8, 32)``; the output layer is linear, so inputs should
    be standardised (as the pipeline's scaled features are).

    Attributes
    ----------
    n_features_in_, coefs_, intercepts_, loss_curve_, n_iter_
        As in :class:`~trainer.network.SigmoidNetwork`; the last layer maps back to
        ``n_features_in_`` outputs.
    """

    def fit(self, X, y=None, sample_weight=None) -> SigmoidAutoencoder:
        """Learn to reconstruct the rows of ``X`` (``y`` is ignored).

        Returns
        -------
        self
        """
        self._validate_params()
        X = self._check_X(X, fitting=True)
        self._start(X.shape[1])
        w = self._check_sample_weight(sample_weight, len(X))
        self._train(X, X, w, epochs=self.max_epochs, val=None, stop=True)
        return self

    def partial_fit(self, X, y=None, sample_weight=None) -> SigmoidAutoencoder:
        """One more epoch over ``X``, continuing from the current weights."""
        self._validate_params()
        fitted = hasattr(self, "coefs_")
        X = self._check_X(X, fitting=not fitted)
        if not fitted:
            self._start(X.shape[1])
        w = self._check_sample_weight(sample_weight, len(X))
        self._train(X, X, w, epochs=1, val=None, stop=False)
        return self

    def _n_outputs(self) -> int:
        return self.n_features_in_

    def _head(self):
        return MeanSquaredError

    def reconstruct(self, X) -> np.ndarray:
        """The network's output for each row: its reconstruction, ``[n, n_features]``."""
        return self._forward(X)

    def score_samples(self, X) -> np.ndarray:
        """Anomaly score: mean squared reconstruction error per row (higher is more unusual)."""
        self._check_fitted()
        X = self._check_X(X, fitting=False)
        error = self.reconstruct(X) - X
        return np.einsum("ij,ij->i", error, error) / error.shape[1]

    def score(self, X, y=None, sample_weight=None) -> float:
        """Negative mean reconstruction error (higher is better, as scikit-learn expects)."""
        return -float(np.average(self.score_samples(X), weights=sample_weight))

    def to_onnx(self, g, x: str, prefix: str = "autoencoder_") -> str:
        """Emit the reconstruction and its error; mirrors :meth:`score_samples`.

        Per layer ``dense_{i}_matmul``/``_add``/``_sigmoid`` (the last layer, linear, is
        ``reconstruction``), then ``reconstruction_error`` (Sub), ``_squared`` (Mul) and
        ``_mean`` (ReduceMean over features).

        Returns
        -------
        str
            Name of the float32 ``[batch]`` score tensor.
        """
        self._check_fitted()
        last = f"{prefix}reconstruction"
        a = self._dense_stack_to_onnx(g, x, prefix, last, last)
        error = g.op("Sub", [a, x], name=f"{prefix}reconstruction_error")
        squared = g.op("Mul", [error, error], name=f"{prefix}reconstruction_error_squared")
        axes = g.const(f"{prefix}feature_axis", np.array([1], np.int64))
        return g.op("ReduceMean", [squared, axes], name=f"{prefix}reconstruction_error_mean",
                    keepdims=0)
