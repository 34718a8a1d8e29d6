"""Anomaly detectors on feature vectors: out-of-fold threshold, graph parity, clear errors."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from trainer import calibration
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
def test_threshold_is_set_for_the_target_rate_and_holds_on_new_normal_data(detector):
    train, test = normal_features(600, 0), normal_features(2000, 1)
    det = AnomalyDetector(detector=detector, random_state=0).fit(train)
    scores, fold = det.calibration_scores_, det.folds_
    assert len(scores) == 600
    # five contiguous blocks in time
    assert (np.diff(fold) >= 0).all() and np.bincount(fold).tolist() == [120] * 5
    # target 1%: the larger of the log-normal 99.99% quantile (a margin of 100 for the
    # heavier tail of later data) and the worst block's 99% quantile
    logs = np.log(scores)
    lognormal = np.exp(logs.mean() + 3.7190 * logs.std(ddof=1))
    worst = max(np.quantile(scores[fold == f], 0.99) for f in range(5))
    assert det.threshold_ == pytest.approx(max(lognormal, worst), rel=1e-4)
    false_alarms = det.predict(test).mean()
    assert false_alarms < 0.02, false_alarms
    assert 0 <= det.expected_false_alarm_rate_ < 0.03
    # --quantile keeps the rule before: the 99.9% quantile of a log-normal
    old = AnomalyDetector(detector=detector, quantile=0.999, random_state=0).fit(train)
    assert old.threshold_ == pytest.approx(np.exp(logs.mean() + 3.0902 * logs.std(ddof=1)),
                                           rel=1e-4)
    empirical = AnomalyDetector(detector=detector, quantile=0.99, threshold_rule="empirical",
                                random_state=0).fit(train)
    assert empirical.threshold_ == pytest.approx(np.quantile(scores, 0.99))
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
        ({"target_false_alarms": 0.0}, 100, r"target false-alarm rate must be in \(0, 1\)"),
        ({"calibration": "random"}, 100, "calibration must be one of"),
        ({"threshold_rule": "max"}, 100, "threshold_rule must be one of"),
        ({}, 10, "at least 20 normal windows, got 10"),
        ({"n_folds": 1}, 100, "n_folds must be >= 2"),
    ],
)
def test_bad_settings_are_named(kwargs, n, message):
    with pytest.raises(ValueError, match=message):
        AnomalyDetector(**kwargs).fit(normal_features(n, 0))


def drifting_features(n, seed, start=0, d=8):
    """Normal features whose operating point drifts with time (row order): 3 units / 600."""
    x = normal_features(n, seed, d)
    drift = ((start + np.arange(n)) * 3.0 / 600)[:, None] * np.linspace(0.5, 1.5, d)[None, :]
    return (x + drift).astype(np.float32)


def test_blocked_calibration_sees_drift_that_shuffled_folds_hide():
    # trained on 600 windows of a drift, scored on the 300 that follow; the same rule
    train, later = drifting_features(600, 0), drifting_features(300, 1, start=600)
    blocked = AnomalyDetector(detector="kmeans", quantile=0.999).fit(train)
    shuffled = AnomalyDetector(detector="kmeans", quantile=0.999,
                               calibration="shuffled").fit(train)
    # a block scored by a detector that never saw its stretch of time scores higher
    assert np.median(blocked.calibration_scores_) > np.median(shuffled.calibration_scores_)
    assert blocked.threshold_ > shuffled.threshold_
    assert blocked.predict(later).mean() < shuffled.predict(later).mean()


def test_blocks_are_contiguous_per_device():
    groups = np.array(["a"] * 10 + ["b"] * 5 + ["a"] * 0)
    fold = calibration.folds(15, 5, groups=groups)
    assert fold[:10].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert fold[10:].tolist() == [0, 1, 2, 3, 4]
    shuffled = calibration.folds(15, 5, calibration="shuffled", random_state=0)
    assert sorted(np.bincount(shuffled).tolist()) == [3] * 5
    with pytest.raises(ValueError, match="calibration must be one of"):
        calibration.folds(15, 5, calibration="random")
    # each block is scored against a threshold from the other blocks only
    scores = np.r_[np.ones(10), np.full(5, 10.0)]
    rule = lambda s, f: float(s.max())  # noqa: E731
    assert calibration.held_out_false_alarms(scores, np.repeat([0, 1, 2], 5), rule) == \
        [0.0, 0.0, 1.0]
