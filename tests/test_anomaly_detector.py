"""Anomaly detectors on feature vectors: out-of-fold threshold, graph parity, clear errors."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from trainer.anomaly import AnomalyDetector
from trainer.graph import GraphBuilder, float_input

pytestmark = pytest.mark.filterwarnings("ignore::trainer.network.ConvergenceWarning")


def normal_features(n, seed, d=8):
    """Two operating modes on a curved 2-D surface in 8-D, standardised-ish."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(-1, 1, size=(n, 2))
    mode = rng.integers(2, size=n)[:, None] * 3.0
    base = np.concatenate([t, np.sin(2 * t), t**2, t[:, :1] * t[:, 1:], mode], axis=1)
    basis = np.random.default_rng(99).normal(size=(base.shape[1], d))
    return (base @ basis + 0.05 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("detector", ["autoencoder", "kmeans"])
def test_threshold_is_the_out_of_fold_quantile_and_holds_on_new_normal_data(detector):
    train, test = normal_features(600, 0), normal_features(2000, 1)
    det = AnomalyDetector(detector=detector, random_state=0).fit(train)
    logs = np.log(det.calibration_scores_)
    # the 99.9% quantile of a log-normal fitted to the out-of-fold scores
    assert det.threshold_ == pytest.approx(np.exp(logs.mean() + 3.0902 * logs.std(ddof=1)),
                                           rel=1e-4)
    assert len(det.calibration_scores_) == 600
    false_alarms = det.predict(test).mean()
    assert false_alarms < 0.01, false_alarms
    empirical = AnomalyDetector(detector=detector, quantile=0.99, threshold_rule="empirical",
                                random_state=0).fit(train)
    assert empirical.threshold_ == pytest.approx(np.quantile(det.calibration_scores_, 0.99))
    # far off the normal surface: every one flagged
    outliers = test[:200] + np.random.default_rng(2).normal(0, 5.0, size=(200, 8))
    assert det.predict(outliers).mean() > 0.95
    p = det.anomaly_proba(np.vstack([test[:100], outliers[:100]]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert ((p[:, 1] > 0.5) == det.predict(np.vstack([test[:100], outliers[:100]]))).all()


def test_probability_is_half_at_the_threshold_and_small_at_the_median():
    det = AnomalyDetector(detector="kmeans").fit(normal_features(300, 0))
    X = np.vstack([normal_features(50, 1), normal_features(50, 2) * 2])
    s = det.score_samples(X)
    p = det.anomaly_proba(X)[:, 1]
    logistic = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    np.testing.assert_allclose(p, logistic((s - det.threshold_) / det.width_), rtol=1e-5)
    median = np.median(det.calibration_scores_)
    assert logistic((median - det.threshold_) / det.width_) == pytest.approx(0.01)
    assert ((p > 0.5) == (s > det.threshold_)).all()


@pytest.mark.parametrize("detector", ["autoencoder", "kmeans"])
def test_graph_matches_numpy(detector):
    train = normal_features(300, 3)
    det = AnomalyDetector(detector=detector, random_state=1).fit(train)
    g = GraphBuilder("anomaly")
    out = det.to_onnx(g, "x")
    score, proba = g.rename(out["score"], "score"), g.rename(out["proba"], "proba")
    model = g.model([float_input("x", ["batch", 8])],
                    [float_input("score", ["batch"]), float_input("proba", ["batch", 2])])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    test = np.vstack([normal_features(50, 4), normal_features(20, 5) * 3]).astype(np.float32)
    got_score, got_proba = sess.run([score, proba], {"x": test})
    np.testing.assert_allclose(got_score, det.score_samples(test), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_proba, det.anomaly_proba(test), atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "n", "message"),
    [
        ({"detector": "forest"}, 100, "unknown detector 'forest'"),
        ({"quantile": 1.0}, 100, r"quantile must be in \(0, 1\)"),
        ({"threshold_rule": "max"}, 100, "threshold_rule must be one of"),
        ({}, 10, "at least 20 normal windows, got 10"),
        ({"n_folds": 1}, 100, "n_folds must be >= 2"),
    ],
)
def test_bad_settings_are_named(kwargs, n, message):
    with pytest.raises(ValueError, match=message):
        AnomalyDetector(**kwargs).fit(normal_features(n, 0))
