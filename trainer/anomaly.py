"""Anomaly detectors on scaled feature vectors, with a calibrated threshold.

Two detectors, both trained on normal data only and both exported as graph ops:

- ``"autoencoder"``: a :class:`~trainer.autoencoder.SigmoidAutoencoder`; the score is the
  mean squared reconstruction error of the scaled feature vector;
- ``"kmeans"``: :class:`~trainer.kmeans.KMeans`; the score is the Euclidean distance to
  the nearest centroid (like Edge Impulse's anomaly block).

The threshold (metadata ``anomaly_threshold``; a score above it is an anomaly) is the
:data:`DEFAULT_QUANTILE` quantile of *out-of-fold* scores of the normal training data: the
data is split into :data:`N_FOLDS` folds, each fold is scored by a detector trained on the
other folds, and the final detector is then trained on everything. Scores of a model on
its own training data are optimistic (an autoencoder reconstructs what it has seen better
than what it has not), so a quantile of them lets through more false alarms on new normal
data; out-of-fold scores behave like scores of new data. The 99.8th percentile rather than
the 99th leaves room for the quantile's own estimation error with a few hundred windows
(measured in ``bench/bench_anomaly.py``).

Besides the score, the graph gives a probability of "anomaly" as a two-column
``probabilities`` output ``[normal, anomaly]`` so a daemon that knows only classifiers
can still use the model: ``p = sigmoid((score - threshold) / width)`` is 0.5 at the
threshold and 0.01 at the median out-of-fold score.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trainer.graph import GraphBuilder

DETECTORS = ("autoencoder", "kmeans")
DEFAULT_QUANTILE = 0.998
N_FOLDS = 5
# Fewer normal windows than this cannot calibrate a threshold (each fold needs a few).
MIN_WINDOWS = 20
ANOMALY_LABELS = ("normal", "anomaly")


def make_detector(name: str, n_samples: int, n_features: int, random_state: int | None,
                  **params):
    """An unfitted detector called ``name`` with defaults sized for the data.

    Autoencoder: one hidden layer of ``min(16, n_features // 2)`` sigmoid units (a
    bottleneck). k-means: ``min(8, n_samples // 10)`` clusters. ``params`` override them
    (``hidden_layers=...`` or ``n_clusters=...``).
    """
    if name == "autoencoder":
        from trainer.autoencoder import SigmoidAutoencoder

        params.setdefault("hidden_layers", (max(1, min(16, n_features // 2)),))
        return SigmoidAutoencoder(random_state=random_state, **params)
    if name == "kmeans":
        from trainer.kmeans import KMeans

        params.setdefault("n_clusters", max(1, min(8, n_samples // 10)))
        return KMeans(random_state=random_state, **params)
    raise ValueError(f"unknown detector {name!r}; choose one of {DETECTORS}")


class AnomalyDetector:
    """A detector on scaled feature vectors plus its calibrated threshold.

    Parameters
    ----------
    detector : {"autoencoder", "kmeans"}
        Which detector to train.
    quantile : float
        Quantile of the out-of-fold normal scores used as the threshold.
    n_folds : int
        Folds for the out-of-fold scores.
    random_state : int or None
        Seed for the folds and the detectors.
    params : dict, optional
        Detector parameters (see :func:`make_detector`).

    Attributes
    ----------
    detector_ : SigmoidAutoencoder or KMeans
        Trained on all the data given to :meth:`fit`.
    threshold_ : float
        A score above it is an anomaly.
    calibration_scores_ : ndarray
        The out-of-fold scores the threshold came from.
    width_ : float
        Scale of the anomaly probability around the threshold.
    """

    def __init__(self, *, detector: str = "autoencoder", quantile: float = DEFAULT_QUANTILE,
                 n_folds: int = N_FOLDS, random_state: int | None = 0,
                 params: dict[str, Any] | None = None):
        self.detector = detector
        self.quantile = quantile
        self.n_folds = n_folds
        self.random_state = random_state
        self.params = params

    def fit(self, F, y=None) -> AnomalyDetector:
        """Calibrate the threshold out-of-fold, then train the detector on all of ``F``.

        Raises
        ------
        ValueError
            On an unknown detector, a quantile outside (0, 1], or too little data.
        """
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown detector {self.detector!r}; choose one of {DETECTORS}")
        if not 0 < self.quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {self.quantile!r}")
        if int(self.n_folds) < 2:
            raise ValueError(f"n_folds must be >= 2, got {self.n_folds!r}")
        F = np.asarray(F, np.float32)
        if F.ndim != 2 or not np.isfinite(F).all():
            raise ValueError(f"features must be a finite 2-D array, got shape {F.shape}")
        if len(F) < MIN_WINDOWS:
            raise ValueError(
                f"an anomaly threshold needs at least {MIN_WINDOWS} normal windows, got "
                f"{len(F)}; record longer or use a smaller --hop"
            )
        rng = np.random.default_rng(self.random_state)
        fold = rng.permutation(len(F)) % int(self.n_folds)
        scores = np.empty(len(F))
        for i in range(int(self.n_folds)):
            train = fold != i
            model = self._new(F[train]).fit(F[train])
            scores[~train] = model.score_samples(F[~train])
        self.calibration_scores_ = scores
        self.threshold_ = float(np.quantile(scores, self.quantile))
        median = float(np.median(scores))
        # 0.5 at the threshold, 0.01 at the median normal score.
        self.width_ = max(self.threshold_ - median, 1e-6 * max(abs(self.threshold_), 1.0)) / \
            math.log(99.0)
        self.detector_ = self._new(F).fit(F)
        self.n_features_in_ = F.shape[1]
        return self

    def _new(self, F):
        return make_detector(self.detector, len(F), F.shape[1], self.random_state,
                             **dict(self.params or {}))

    def score_samples(self, F) -> np.ndarray:
        """Anomaly score per row (higher is more unusual)."""
        self._check_fitted()
        return self.detector_.score_samples(np.asarray(F, np.float32))

    def predict(self, F) -> np.ndarray:
        """``True`` where the score is above the threshold."""
        return self.score_samples(F) > self.threshold_

    def anomaly_proba(self, F) -> np.ndarray:
        """``[p(normal), p(anomaly)]`` per row, as the graph's ``probabilities`` output."""
        z = (self.score_samples(F) - self.threshold_) / self.width_
        p = 0.5 * (1.0 + np.tanh(0.5 * z))
        return np.stack([1.0 - p, p], axis=1).astype(np.float32)

    def to_onnx(self, g: GraphBuilder, x: str) -> dict[str, str]:
        """Emit the detector reading scaled features ``x`` (float32 ``[batch, n_features]``).

        Returns
        -------
        dict
            ``"score"``: float32 ``[batch]``; ``"proba"``: float32 ``[batch, 2]``
            (``[normal, anomaly]``).
        """
        self._check_fitted()
        if self.detector == "kmeans":
            score = self.detector_.to_onnx(g, x, prefix="anomaly_kmeans")["distance"]
        else:
            score = self.detector_.to_onnx(g, x, prefix="anomaly_autoencoder_")
        shifted = g.op("Sub", [score, g.const("anomaly_threshold_value",
                                              np.float32(self.threshold_))],
                       name="anomaly_margin")
        z = g.op("Mul", [shifted, g.const("anomaly_inv_width", np.float32(1.0 / self.width_))],
                 name="anomaly_logit")
        column = g.op("Unsqueeze", [z, g.const("anomaly_axis1", np.array([1], np.int64))],
                      name="anomaly_logit_column")
        p = g.op("Sigmoid", [column], name="anomaly_probability")
        q = g.op("Sub", [g.const("anomaly_one", np.ones((1, 1), np.float32)), p],
                 name="normal_probability")
        proba = g.op("Concat", [q, p], name="anomaly_probabilities", axis=1)
        return {"score": score, "proba": proba}

    def describe(self) -> dict[str, Any]:
        """JSON-able description for metadata and reports."""
        self._check_fitted()
        scores = self.calibration_scores_
        out = {
            "detector": self.detector,
            "score": ("mean squared reconstruction error of the scaled features"
                      if self.detector == "autoencoder"
                      else "distance to the nearest k-means centroid (scaled features)"),
            "threshold": self.threshold_,
            "threshold_rule": f"quantile {self.quantile} of {self.n_folds}-fold out-of-fold "
                              "scores of the normal training windows",
            "calibration_windows": int(len(scores)),
            "calibration_median": float(np.median(scores)),
            "probability": "sigmoid((score - threshold) / width): 0.5 at the threshold, "
                           "0.01 at the median calibration score",
            "width": self.width_,
        }
        if self.detector == "kmeans":
            out.update(self.detector_.describe())
        else:
            out["hidden_layers"] = list(self.detector_.hidden_layers)
            out["epochs"] = int(self.detector_.n_iter_)
        return out

    def _check_fitted(self) -> None:
        if not hasattr(self, "detector_"):
            raise RuntimeError("this AnomalyDetector is not fitted yet; call fit(F) first")
