"""The whole trained model in numpy: windows -> features -> scaling -> sigmoid network.

:class:`Pipeline` is what ``sigmoid-train fit`` trains and :mod:`trainer.export` turns
into one ONNX graph. Each step has a numpy path (``fit``/``predict_proba``) and a graph
path (``to_onnx``) that compute the same numbers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from trainer.features.registry import build_families
from trainer.graph import GraphBuilder

# Features whose training spread is below this are constant: divide by 1, not by ~0.
MIN_SCALE = 1e-6


def default_network(hidden_layers: tuple[int, ...], random_state: int | None, **params):
    """The project's sigmoid network (imported lazily: the trainer's heaviest module)."""
    from trainer.network import SigmoidNetwork

    return SigmoidNetwork(hidden_layers=tuple(hidden_layers), random_state=random_state,
                          **params)


class Pipeline:
    """Feature families, a standard scaler and a classifier, as one estimator.

    Parameters
    ----------
    features : sequence of str
        Feature specs (see :mod:`trainer.features.registry`), e.g. ``("stats", "spectral")``.
    hidden_layers : tuple of int
        Hidden layer sizes of the network; ``()`` is multinomial logistic regression.
    random_state : int or None
        Seed for the network (and any family that draws random numbers).
    network_params : dict, optional
        Extra keyword arguments for the network.
    network_factory : callable, optional
        ``factory(hidden_layers, random_state, **network_params)`` returning an unfitted
        classifier with ``fit``, ``predict_proba``, ``classes_`` and ``to_onnx(g, x)``.
        Defaults to :class:`trainer.network.SigmoidNetwork`.
    """

    def __init__(
        self,
        features: Sequence[str] = ("stats", "spectral"),
        hidden_layers: tuple[int, ...] = (),
        random_state: int | None = 0,
        network_params: dict[str, Any] | None = None,
        network_factory: Callable | None = None,
    ):
        self.features = tuple(features)
        self.hidden_layers = tuple(hidden_layers)
        self.random_state = random_state
        self.network_params = network_params
        self.network_factory = network_factory

    def fit(self, X: np.ndarray, y: np.ndarray, unlabelled: np.ndarray | None = None,
            families: Sequence | None = None) -> Pipeline:
        """Fit the feature families, the scaler and the network on windows ``[N, W, C]``.

        ``unlabelled`` windows (same shape) go to the network's ``fit(..., unlabelled=F)``
        as scaled features, for ``SigmoidNetwork(pretrain="rbm")``. ``families``: the
        families of ``features`` already fitted on these windows (the selection fitted
        them; a pruned conv pool is worth not fitting twice); they are used as they are.
        """
        X = _check_windows(X)
        self.window_, self.n_channels_ = X.shape[1], X.shape[2]
        # Raw sample range per channel: exported as the model's input_range, which the
        # daemon uses to tell a broken model from hostile input.
        self.input_min_ = X.min(axis=(0, 1)).astype(np.float64)
        self.input_max_ = X.max(axis=(0, 1)).astype(np.float64)
        if families is not None:
            self.families_ = list(families)
        else:
            self.families_ = fit_families(self.features, X, y, self.random_state)
        F = self._raw_features(X)
        self.feature_mean_ = F.mean(axis=0).astype(np.float32)
        std = F.std(axis=0)
        self.feature_scale_ = np.where(std > MIN_SCALE, std, 1.0).astype(np.float32)
        factory = self.network_factory or default_network
        self.network_ = factory(self.hidden_layers, self.random_state,
                                **(self.network_params or {}))
        if unlabelled is None:
            self.network_.fit(self._scale(F), np.asarray(y))
        else:
            U = _check_windows(unlabelled, self.window_, self.n_channels_)
            self.network_.fit(self._scale(F), np.asarray(y),
                              unlabelled=self._scale(self._raw_features(U)))
        self.classes_ = np.asarray(self.network_.classes_)
        return self

    def _raw_features(self, X: np.ndarray) -> np.ndarray:
        return np.concatenate([f.transform(X) for f in self.families_], axis=1)

    def _scale(self, F: np.ndarray) -> np.ndarray:
        return ((F - self.feature_mean_) * (np.float32(1.0) / self.feature_scale_)).astype(
            np.float32)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Scaled features ``[N, n_features]``: what the network sees."""
        self._check_fitted()
        return self._scale(self._raw_features(_check_windows(X, self.window_, self.n_channels_)))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities ``[N, n_classes]``, columns in ``classes_`` order."""
        return np.asarray(self.network_.predict_proba(self.transform(X)), np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    @property
    def n_features_(self) -> int:
        return int(self.feature_mean_.size)

    def feature_names(self, channels: Sequence[str]) -> list[str]:
        return [n for f in self.families_ for n in f.feature_names(list(channels))]

    def to_onnx(self, g: GraphBuilder, window: str, *, fold_scaling: bool = True) -> str:
        """Emit features, scaling and network; return the probabilities tensor name.

        The features end in a tensor named ``features``. With ``fold_scaling`` the scaler
        is folded into the first layer of the network (``W' = W / std``,
        ``b' = b - (mean / std) @ W``: no extra nodes); without it, it is two nodes
        ``(features - mean) * (1 / std)`` -> ``scaled_features``, which static int8
        quantization needs (it calibrates one range for the whole network input, and
        standardized features share one range; raw features do not).
        """
        self._check_fitted()
        parts = [f.to_onnx(g, window) for f in self.families_]
        if len(parts) == 1:
            feats = g.rename(parts[0], "features")
        else:
            feats = g.op("Concat", parts, name="features", axis=1)
        inv_std = np.float32(1.0) / self.feature_scale_
        network = self._folded_network(inv_std) if fold_scaling else None
        if network is not None:
            return network.to_onnx(g, feats)
        centered = g.op("Sub", [feats, g.const("feature_mean", self.feature_mean_)],
                        name="scale_center")
        scaled = g.op("Mul", [centered, g.const("feature_inv_std", inv_std)],
                      name="scaled_features")
        return self.network_.to_onnx(g, scaled)

    def _folded_network(self, inv_std: np.ndarray):
        """A shallow copy of the network whose first layer also does the scaling."""
        net = self.network_
        if not (hasattr(net, "coefs_") and hasattr(net, "intercepts_")):
            return None
        W = np.asarray(net.coefs_[0], np.float64)
        b = np.asarray(net.intercepts_[0], np.float64)
        folded = copy.copy(net)
        folded.coefs_ = [(W * inv_std[:, None]).astype(np.float32), *net.coefs_[1:]]
        shift = (self.feature_mean_.astype(np.float64) * inv_std) @ W
        folded.intercepts_ = [(b - shift).astype(np.float32), *net.intercepts_[1:]]
        return folded

    def describe(self) -> dict[str, Any]:
        """JSON-able description for metadata and reports."""
        self._check_fitted()
        return {
            "families": [f.describe() for f in self.families_],
            "specs": list(self.features),
            "n_features": self.n_features_,
            "scaling": "standardized with training mean/std, inside the graph",
            "hidden_layers": list(self.hidden_layers),
        }

    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise RuntimeError("this Pipeline is not fitted yet; call fit(X, y) first")


def fit_families(specs: Sequence[str], X: np.ndarray, y, random_state: int | None,
                 splits=None) -> list:
    """Build and fit the families of ``specs`` on windows ``X``.

    Families that choose their features with the labels (``supervised``, e.g. a pruned
    conv pool) get ``y`` and ``splits`` too; the pipeline's seed reaches every family
    that has none.
    """
    fitted = []
    for family in build_families(specs):
        if hasattr(family, "random_state") and family.random_state is None:
            family.random_state = random_state
        if getattr(family, "supervised", False):
            fitted.append(family.fit(X, np.asarray(y), splits=splits))
        else:
            fitted.append(family.fit(X))
    return fitted


def _check_windows(X, window: int | None = None, channels: int | None = None) -> np.ndarray:
    X = np.asarray(X, np.float32)
    if X.ndim != 3:
        raise ValueError(f"windows must be a [n, window, channels] array, got shape {X.shape}")
    if window is not None and X.shape[1:] != (window, channels):
        raise ValueError(f"windows must have shape [n, {window}, {channels}] like the training "
                         f"data, got {list(X.shape)}")
    if not np.isfinite(X).all():
        raise ValueError("windows contain NaN or infinite values; fill missing values first")
    return X
