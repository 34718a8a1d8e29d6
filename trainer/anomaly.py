"""Anomaly detectors on scaled feature vectors, with a calibrated threshold.

Two detectors, both trained on normal data only and both exported as graph ops:

- ``"autoencoder"``: a :class:`~trainer.autoencoder.SigmoidAutoencoder`; the score is the
  mean squared reconstruction error of the scaled feature vector;
- ``"kmeans"``: :class:`~trainer.kmeans.KMeans`; the score is the Euclidean distance to
  the nearest centroid (like Edge Impulse's anomaly block).

The threshold (metadata ``anomaly_threshold``; a score above it is an anomaly) is computed
from *out-of-fold* scores of the normal training data: the data is split into
:data:`N_FOLDS` folds, each fold is scored by a detector trained on the other folds, and
the final detector is then trained on everything. Scores of a model on its own training
data are optimistic (an autoencoder reconstructs what it has seen better than what it has
not), so a threshold taken from them lets through more false alarms on new normal data;
out-of-fold scores behave like scores of new data.

The folds are contiguous blocks in time (``calibration="blocked"``, the default; see
:mod:`trainer.calibration`), so every calibration score is that of a stretch of time the
detector has not seen, drift included. By default the threshold is set for a target
false-alarm rate per window (``target_false_alarms``, 1%); with ``quantile`` it is that
quantile of a log-normal fitted to the out-of-fold scores (``exp(mean + z * std)`` of the
log-scores; ``threshold_rule="empirical"``: their plain empirical quantile), the rule
before time-blocked calibration. Either way the false-alarm rate to expect on later data
is estimated from held-out blocks and reported (``expected_false_alarm_rate_``).

Besides the score, the graph gives a probability of "anomaly" as a two-column
``probabilities`` output ``[normal, anomaly]`` so a daemon that knows only classifiers
can still use the model: ``p = sigmoid((score - threshold) / width)`` is 0.5 at the
threshold and 0.01 at the median out-of-fold score.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from edge import contract
from trainer import calibration
from trainer.calibration import CALIBRATIONS, DEFAULT_TARGET_FALSE_ALARMS
from trainer.graph import GraphBuilder, float_input

DETECTORS = ("autoencoder", "kmeans")
# The rule before time-blocked calibration (``--quantile``): 99.9% of a log-normal.
DEFAULT_QUANTILE = 0.999
THRESHOLD_RULES = ("lognormal", "empirical")
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


def threshold(scores: np.ndarray, quantile: float, rule: str = "lognormal") -> float:
    """The ``quantile`` of ``scores``: of a log-normal fitted to them, or empirical."""
    if rule == "empirical":
        return float(np.quantile(np.asarray(scores, np.float64), quantile))
    return calibration.lognormal_quantile(scores, quantile)


class AnomalyDetector:
    """A detector on scaled feature vectors plus its calibrated threshold.

    Parameters
    ----------
    detector : {"autoencoder", "kmeans"}
        Which detector to train.
    target_false_alarms : float
        Share of normal windows of unseen time the threshold should flag (default 0.01);
        ignored when ``quantile`` is given.
    quantile : float, optional
        Instead of a target rate: the threshold is this quantile of the out-of-fold normal
        scores (of a log-normal fitted to them, or empirical: ``threshold_rule``).
    threshold_rule : {"lognormal", "empirical"}
        With ``quantile``: take the quantile of a log-normal fitted to the out-of-fold
        scores, or of the scores themselves.
    calibration : {"blocked", "shuffled"}
        Folds of contiguous blocks in time (per group), or of shuffled windows.
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
    folds_ : ndarray of int
        The fold of each calibration window.
    held_out_false_alarms_ : list of float
        Per fold, the share of its windows above a threshold computed without it.
    expected_false_alarm_rate_ : float
        Their mean: the false-alarm rate per window to expect on later normal data.
    width_ : float
        Scale of the anomaly probability around the threshold.
    """

    def __init__(self, *, detector: str = "autoencoder",
                 target_false_alarms: float = DEFAULT_TARGET_FALSE_ALARMS,
                 quantile: float | None = None, threshold_rule: str = "lognormal",
                 calibration: str = "blocked", n_folds: int = N_FOLDS,
                 random_state: int | None = 0, params: dict[str, Any] | None = None):
        self.detector = detector
        self.target_false_alarms = target_false_alarms
        self.quantile = quantile
        self.threshold_rule = threshold_rule
        self.calibration = calibration
        self.n_folds = n_folds
        self.random_state = random_state
        self.params = params

    def fit(self, F, y=None, groups=None) -> AnomalyDetector:
        """Calibrate the threshold out-of-fold, then train the detector on all of ``F``.

        Parameters
        ----------
        F : ndarray, shape (n, n_features)
            Scaled features of normal windows, in time order (within each group).
        y : ignored
        groups : array-like, optional
            Device (or file) of each window, for blocks in time per device.

        Raises
        ------
        ValueError
            On an unknown detector, a quantile or target outside (0, 1), or too little data.
        """
        self._check_settings()
        F = np.asarray(F, np.float32)
        if F.ndim != 2 or not np.isfinite(F).all():
            raise ValueError(f"features must be a finite 2-D array, got shape {F.shape}")
        if len(F) < MIN_WINDOWS:
            raise ValueError(
                f"an anomaly threshold needs at least {MIN_WINDOWS} normal windows, got "
                f"{len(F)}; record longer or use a smaller --hop"
            )
        from trainer.network import ConvergenceWarning

        fold = calibration.folds(len(F), int(self.n_folds), calibration=self.calibration,
                                 groups=groups, random_state=self.random_state)
        scores = np.empty(len(F))
        with warnings.catch_warnings():
            # An autoencoder stopped by max_epochs is still a usable detector: its
            # threshold is calibrated on what it learned (the report has its epochs).
            warnings.simplefilter("ignore", ConvergenceWarning)
            for i in range(int(self.n_folds)):
                train = fold != i
                model = self._new(F[train]).fit(F[train])
                scores[~train] = model.score_samples(F[~train])
            self.detector_ = self._new(F).fit(F)
        self.calibration_scores_ = scores
        self.folds_ = fold
        self.threshold_ = self._rule(scores, fold)
        self.held_out_false_alarms_ = calibration.held_out_false_alarms(scores, fold,
                                                                        self._rule)
        self.expected_false_alarm_rate_ = float(np.mean(self.held_out_false_alarms_))
        median = float(np.median(scores))
        # 0.5 at the threshold, 0.01 at the median normal score.
        self.width_ = max(self.threshold_ - median, 1e-6 * max(abs(self.threshold_), 1.0)) / \
            math.log(99.0)
        self.n_features_in_ = F.shape[1]
        return self

    def _check_settings(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown detector {self.detector!r}; choose one of {DETECTORS}")
        if self.quantile is not None and not 0 < self.quantile < 1:
            raise ValueError(f"quantile must be in (0, 1), got {self.quantile!r}")
        if self.quantile is None and not 0 < self.target_false_alarms < 1:
            raise ValueError("target false-alarm rate must be in (0, 1) (a share of windows, "
                             f"e.g. 0.01), got {self.target_false_alarms!r}")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"threshold_rule must be one of {THRESHOLD_RULES}, got "
                             f"{self.threshold_rule!r}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got "
                             f"{self.calibration!r}")
        if int(self.n_folds) < 2:
            raise ValueError(f"n_folds must be >= 2, got {self.n_folds!r}")

    def _rule(self, scores: np.ndarray, fold: np.ndarray) -> float:
        """The threshold from out-of-fold ``scores`` (with their folds)."""
        if self.quantile is not None:
            return threshold(scores, self.quantile, self.threshold_rule)
        return calibration.target_threshold(scores, fold, self.target_false_alarms)

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
                 name="anomaly_normal_probability")
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
            "threshold_rule": self._rule_text(),
            "calibration": self.calibration,
            "target_false_alarms": None if self.quantile is not None
            else self.target_false_alarms,
            "expected_false_alarm_rate": self.expected_false_alarm_rate_,
            "expected_false_alarm_rate_method": (
                f"mean over the {self.n_folds} "
                + ("blocks in time" if self.calibration == "blocked" else "shuffled folds")
                + " of the share of a fold's out-of-fold scores above the threshold the same "
                "rule gives from the other folds' scores alone"),
            "held_out_false_alarms": self.held_out_false_alarms_,
            "later_false_alarm_rate": self.held_out_false_alarms_[-1],
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

    def _rule_text(self) -> str:
        folds = (f"{self.n_folds}-fold out-of-fold scores of the normal training windows ("
                 + ("contiguous blocks in time per device)" if self.calibration == "blocked"
                    else "shuffled folds)"))
        if self.quantile is None:
            t = self.target_false_alarms
            return (f"target false-alarm rate {t} per window: the larger of the "
                    f"{1 - t / calibration.TAIL_MARGIN:g} quantile of a log-normal fitted to "
                    "the " + folds + f" and the largest per-fold empirical {1 - t:g} quantile")
        return (f"quantile {self.quantile} of a log-normal fitted to the "
                if self.threshold_rule == "lognormal" else
                f"empirical quantile {self.quantile} of the ") + folds

    def _check_fitted(self) -> None:
        if not hasattr(self, "detector_"):
            raise RuntimeError("this AnomalyDetector is not fitted yet; call fit(F) first")


# --- "networks" for the pipeline ---------------------------------------------------------
# trainer.pipeline.Pipeline runs features -> scaling -> network and exports them as one
# graph. These three classes stand where the network stands (the same fit / predict_proba
# / classes_ / to_onnx interface), so anomaly and cluster models reuse the whole pipeline:
# loading, features, scaling, export with metadata, int8 choice, report. Each names its
# extra graph outputs in ``onnx_outputs`` and their metadata in ``onnx_metadata``.


class AnomalyNetwork:
    """An anomaly-only model: ``probabilities`` is ``[normal, anomaly]``, plus ``anomaly_score``.

    Parameters
    ----------
    hidden_layers : tuple of int
        Autoencoder hidden layers (``()``: the default bottleneck); ignored by k-means.
    random_state : int or None
    detector, target_false_alarms, quantile, calibration, n_clusters
        See :class:`AnomalyDetector` (``n_clusters`` for k-means).
    groups : array-like, optional
        Device of each training window (blocks in time per device).
    """

    def __init__(self, hidden_layers=(), random_state=0, *, detector="autoencoder",
                 target_false_alarms=DEFAULT_TARGET_FALSE_ALARMS, quantile=None,
                 calibration="blocked", n_clusters=None, groups=None):
        self.hidden_layers = tuple(hidden_layers)
        self.random_state = random_state
        self.detector = detector
        self.target_false_alarms = target_false_alarms
        self.quantile = quantile
        self.calibration = calibration
        self.n_clusters = n_clusters
        self.groups = groups

    def fit(self, F, y=None, unlabelled=None) -> AnomalyNetwork:
        """Train on normal feature vectors only (``y`` is ignored)."""
        params = {}
        if self.detector == "autoencoder" and self.hidden_layers:
            params["hidden_layers"] = self.hidden_layers
        if self.detector == "kmeans" and self.n_clusters:
            params["n_clusters"] = int(self.n_clusters)
        groups = self.groups
        if unlabelled is not None:
            F = np.concatenate([F, unlabelled])
            groups = None
        self.detector_ = AnomalyDetector(
            detector=self.detector, target_false_alarms=self.target_false_alarms,
            quantile=self.quantile, calibration=self.calibration,
            random_state=self.random_state, params=params).fit(F, groups=groups)
        self.classes_ = np.array(ANOMALY_LABELS)
        return self

    @property
    def loss_curve_(self) -> list[float]:
        return list(getattr(self.detector_.detector_, "loss_curve_", []))

    def predict_proba(self, F) -> np.ndarray:
        return self.detector_.anomaly_proba(F)

    def score_samples(self, F) -> np.ndarray:
        return self.detector_.score_samples(F)

    def to_onnx(self, g: GraphBuilder, x: str) -> str:
        out = self.detector_.to_onnx(g, x)
        g.rename(out["score"], contract.ANOMALY_OUTPUT)
        return out["proba"]

    def onnx_outputs(self) -> list:
        return [float_input(contract.ANOMALY_OUTPUT, ["batch"])]

    def onnx_metadata(self) -> dict[str, Any]:
        return {contract.ANOMALY_THRESHOLD: self.detector_.threshold_,
                "anomaly": self.detector_.describe()}


class WithAnomaly:
    """A classifier that also carries an anomaly detector (``sigmoid-train fit --anomaly``).

    ``probabilities`` are the classifier's; ``anomaly_score`` says whether a window is
    unlike all the training windows, whatever their class.

    Parameters
    ----------
    hidden_layers, random_state, **network_params
        For the classifier, made by ``base_factory`` (default: the sigmoid network).
    detector, target_false_alarms, quantile
        For the :class:`AnomalyDetector`.
    """

    def __init__(self, hidden_layers=(), random_state=0, *, detector="autoencoder",
                 target_false_alarms=DEFAULT_TARGET_FALSE_ALARMS, quantile=None,
                 base_factory=None, **network_params):
        from trainer.pipeline import default_network

        self.detector = detector
        self.target_false_alarms = target_false_alarms
        self.quantile = quantile
        self.random_state = random_state
        self.classifier = (base_factory or default_network)(hidden_layers, random_state,
                                                            **network_params)

    def fit(self, F, y, **fit_params) -> WithAnomaly:
        self.classifier.fit(F, y, **fit_params)
        self.classes_ = np.asarray(self.classifier.classes_)
        self.detector_ = AnomalyDetector(detector=self.detector, quantile=self.quantile,
                                         target_false_alarms=self.target_false_alarms,
                                         random_state=self.random_state).fit(F)
        return self

    @property
    def loss_curve_(self) -> list[float]:
        return list(getattr(self.classifier, "loss_curve_", []))

    def predict_proba(self, F) -> np.ndarray:
        return self.classifier.predict_proba(F)

    def score_samples(self, F) -> np.ndarray:
        return self.detector_.score_samples(F)

    def to_onnx(self, g: GraphBuilder, x: str) -> str:
        proba = self.classifier.to_onnx(g, x)
        g.rename(self.detector_.to_onnx(g, x)["score"], contract.ANOMALY_OUTPUT)
        return proba

    onnx_outputs = AnomalyNetwork.onnx_outputs
    onnx_metadata = AnomalyNetwork.onnx_metadata


CLUSTER_OUTPUT = "cluster"


class ClusterNetwork:
    """k-means clusters as a model: ``probabilities`` are soft assignments to
    ``cluster_0 .. cluster_{k-1}``, ``cluster`` (int64) the nearest centroid and
    ``anomaly_score`` the distance to it (with a calibrated ``anomaly_threshold``).
    """

    def __init__(self, hidden_layers=(), random_state=0, *, n_clusters=4,
                 target_false_alarms=DEFAULT_TARGET_FALSE_ALARMS, quantile=None):
        self.random_state = random_state
        self.n_clusters = n_clusters
        self.target_false_alarms = target_false_alarms
        self.quantile = quantile

    def fit(self, F, y=None) -> ClusterNetwork:
        self.detector_ = AnomalyDetector(detector="kmeans", quantile=self.quantile,
                                         target_false_alarms=self.target_false_alarms,
                                         random_state=self.random_state,
                                         params={"n_clusters": int(self.n_clusters)}).fit(F)
        self.kmeans_ = self.detector_.detector_
        self.classes_ = np.array([f"cluster_{i}" for i in range(int(self.n_clusters))])
        return self

    loss_curve_: list[float] = []

    def predict_proba(self, F) -> np.ndarray:
        return self.kmeans_.predict_proba(F).astype(np.float32)

    def predict_cluster(self, F) -> np.ndarray:
        return self.kmeans_.predict(F)

    def score_samples(self, F) -> np.ndarray:
        return self.kmeans_.score_samples(F)

    def to_onnx(self, g: GraphBuilder, x: str) -> str:
        out = self.kmeans_.to_onnx(g, x, prefix="cluster")
        g.rename(out["cluster"], CLUSTER_OUTPUT)
        g.rename(out["distance"], contract.ANOMALY_OUTPUT)
        return out["proba"]

    def onnx_outputs(self) -> list:
        from onnx import TensorProto, helper

        return [helper.make_tensor_value_info(CLUSTER_OUTPUT, TensorProto.INT64, ["batch"]),
                float_input(contract.ANOMALY_OUTPUT, ["batch"])]

    def onnx_metadata(self) -> dict[str, Any]:
        return {contract.ANOMALY_THRESHOLD: self.detector_.threshold_,
                "clusters": self.detector_.describe()}
