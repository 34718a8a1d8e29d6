"""Anomaly and cluster models end to end: the CLI on CSV recordings, graph/numpy parity of
the new outputs, the goals on synthetic faults, and ``fit --anomaly`` / ``--unlabelled``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge import contract
from edge.tools import synthetic
from trainer.data import Dataset
from trainer.fit import FitOptions, fit
from trainer.unsupervised import auc, fit_anomaly, fit_clusters

pytestmark = pytest.mark.filterwarnings("ignore::trainer.network.ConvergenceWarning")
W = 128


def trainer(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "trainer", "--log-level", "warning", *args],
                          capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def windows_dataset(X, y=None, source="synthetic"):
    y = np.full(len(X), "") if y is None else y
    return Dataset(X, y, synthetic.CHANNELS[:X.shape[2]], X.shape[1], X.shape[1] // 2,
                   synthetic.SAMPLE_RATE_HZ, source, {"windows": len(X)})


@pytest.fixture(scope="module")
def normal_and_faults():
    normal, _ = synthetic.make_windows(400, window=W, labels=("normal",), seed=1)
    held_out, _ = synthetic.make_windows(1000, window=W, labels=("normal",), seed=2)
    faults, kinds = synthetic.make_fault_windows(50, window=W, seed=3)
    return normal, held_out, faults, kinds


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("detector", ["autoencoder", "kmeans"])
def test_anomaly_model_meets_the_goals_and_matches_numpy(detector, normal_and_faults):
    normal, held_out, faults, kinds = normal_and_faults
    test = windows_dataset(np.concatenate([held_out, faults]),
                           np.concatenate([np.full(len(held_out), "normal"), kinds]))
    result = fit_anomaly(windows_dataset(normal), test, detector=detector)
    model, pipeline, report = result["model"], result["pipeline"], result["report"]
    assert [o.name for o in model.graph.output] == ["probabilities", "anomaly_score"]
    props = {p.key: p.value for p in model.metadata_props}
    info = contract.decode_metadata(props)
    assert info.labels == ("normal", "anomaly")
    threshold = json.loads(props[contract.ANOMALY_THRESHOLD])
    assert threshold == pytest.approx(report["threshold"])

    # the graph computes what numpy computes
    X = test.X[::7]
    proba, score = session(model).run(["probabilities", "anomaly_score"], {"window": X})
    net = pipeline.network_
    F = pipeline.transform(X)
    np.testing.assert_allclose(score, net.score_samples(F), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(proba, net.predict_proba(F), atol=1e-4)
    assert ((proba[:, 1] > 0.5) == (score > threshold)).all()

    # goals: AUC >= 0.95 on the faults, <= 1% false alarms on held-out normal windows
    t = report["test"]
    assert t["auc"] >= 0.95, t
    assert t["false_alarm_rate"] <= 0.01, t
    assert t["detection_rate"] >= 0.9, t
    assert set(t["by_label"]) == set(synthetic.FAULTS)


def test_auc_is_the_rank_statistic():
    assert auc([1, 2, 3], [4, 5]) == 1.0
    assert auc([4, 5], [1, 2, 3]) == 0.0
    assert auc([1, 2], [2, 3]) == pytest.approx(0.875)  # one tie counts half
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), rng.normal(0.5, 1, size=200).round(1)
    y = np.r_[np.zeros(300), np.ones(200)]
    assert auc(a, b) == pytest.approx(sklearn_metrics.roc_auc_score(y, np.r_[a, b]))


def test_cluster_model_outputs_match_numpy():
    X, y = synthetic.make_windows(60, window=64, labels=("normal", "imbalance", "misalignment"),
                                  seed=5)
    result = fit_clusters(windows_dataset(X, y), n_clusters=3)
    model, pipeline, report = result["model"], result["pipeline"], result["report"]
    assert [o.name for o in model.graph.output] == ["probabilities", "cluster", "anomaly_score"]
    proba, cluster, score = session(model).run(None, {"window": X})
    assert cluster.dtype == np.int64
    km = pipeline.network_.kmeans_
    F = pipeline.transform(X)
    np.testing.assert_array_equal(cluster, km.predict(F))
    np.testing.assert_allclose(proba, km.predict_proba(F), atol=1e-4)
    np.testing.assert_allclose(score, km.score_samples(F), rtol=1e-4, atol=1e-5)
    # three clear operating modes: each cluster is one label
    for info in report["clusters"].values():
        assert len(info["labels"]) == 1 and info["windows"] == 60
    assert result["png"][:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    synthetic.write_recording(d / "normal.csv", [("normal", 9000)], seed=1, labels=False)
    synthetic.write_recording(
        d / "test.csv",
        [("normal", 3000), ("spike", 1200), ("normal", 1200), ("drift", 1200),
         ("normal", 1200), ("frequency", 1200), ("normal", 1200), ("stuck", 1200)], seed=2)
    synthetic.write_recording(d / "short.csv", [("normal", 600)], seed=3, labels=False)
    return d


@pytest.mark.slow
def test_fit_anomaly_command(recordings, tmp_path):
    out = tmp_path / "m"
    proc = trainer("fit-anomaly", str(recordings / "normal.csv"), "--window", str(W),
                   "--hop", "64", "--test", str(recordings / "test.csv"), "--detector", "kmeans",
                   "--target-false-alarms", "20/h", "--out", str(out))
    assert "anomaly_threshold" in proc.stdout and "auc" in proc.stdout
    assert "expected false alarms on later normal data" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "report.json", "report.png"]
    r = json.loads((out / "report.json").read_text())
    assert r["kind"] == "anomaly" and r["parameters"]["detector"] == "kmeans"
    assert r["anomaly"]["calibration_windows"] == r["data"]["train"]["windows"] == 139
    # 20 alarms per hour at 100 Hz and hop 64 (5625 windows per hour), calibrated on time
    assert r["parameters"]["target_false_alarms"] == pytest.approx(20 / 5625)
    assert r["anomaly"]["calibration"] == "blocked"
    assert 0 <= r["expected_false_alarm_rate"] <= 1
    assert "blocks in time" in r["expected_false_alarm_rate_method"]
    assert len(r["anomaly"]["held_out_false_alarms"]) == 5
    # windows at a segment border are labelled by majority, so "normal" ones may hold part
    # of a fault: the false-alarm goal is measured on clean windows above, not here
    assert r["test"]["auc"] >= 0.95
    assert set(r["test"]["by_label"]) == set(synthetic.FAULTS)
    props = {p.key: p.value for p in onnx.load(out / "model.onnx").metadata_props}
    assert json.loads(props["anomaly_threshold"]) == pytest.approx(r["threshold"])
    assert json.loads(props["anomaly"])["detector"] == "kmeans"
    info = json.loads(trainer("inspect", str(out / "model.onnx"), "--json").stdout)
    assert "anomaly_score" in json.dumps(info["outputs"])
    # evaluate counts every label but "normal" as an anomaly for such a model
    ev = json.loads(trainer("evaluate", str(out / "model.onnx"), str(recordings / "test.csv"),
                            "--json").stdout)
    assert ev["labels"] == ["normal", "anomaly"] and ev["unknown_labels"] == []
    assert ev["confusion"][1][1] >= 0.9 * sum(ev["confusion"][1])


def test_fit_anomaly_errors_are_clear(recordings, tmp_path):
    proc = trainer("fit-anomaly", str(recordings / "short.csv"), "--window", str(W),
                   "--out", str(tmp_path / "m"), check=False)
    assert proc.returncode == 1
    assert "at least 20 normal windows, got 8" in proc.stderr
    assert not (tmp_path / "m" / "model.onnx").exists()
    proc = trainer("fit-anomaly", str(recordings / "short.csv"), "--window", str(W),
                   "--target-false-alarms", "1.5", "--out", str(tmp_path / "m"), check=False)
    assert proc.returncode == 2
    assert "a share of windows in (0, 1) like 0.01, or alarms per hour like 2/h" in proc.stderr
    proc = trainer("cluster", str(recordings / "short.csv"), "--window", str(W), "--k", "6",
                   "--out", str(tmp_path / "c"), check=False)
    assert proc.returncode == 1 and "too few for 6 clusters" in proc.stderr


@pytest.mark.slow
def test_cluster_command(recordings, tmp_path):
    out = tmp_path / "c"
    proc = trainer("cluster", str(recordings / "test.csv"), "--window", "64", "--k", "3",
                   "--out", str(out))
    assert "cluster_0" in proc.stdout
    r = json.loads((out / "report.json").read_text())
    assert r["kind"] == "clusters" and sum(c["windows"] for c in r["clusters"].values()) == \
        r["data"]["windows"]
    # the file's labels are counted per cluster, to help name the clusters
    assert any("normal" in c["labels"] for c in r["clusters"].values())
    model = onnx.load(out / "model.onnx")
    assert contract.decode_metadata({p.key: p.value for p in model.metadata_props}).labels == \
        ("cluster_0", "cluster_1", "cluster_2")
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_classifier_with_anomaly_output(normal_and_faults):
    X, y = synthetic.make_windows(40, window=64, labels=("normal", "imbalance"), seed=8)
    train = windows_dataset(X, y)
    options = FitOptions(features=["stats", "spectral"], hidden_layers=(8,), anomaly="kmeans",
                         quantization_variants=["static_qdq_channel_net"])
    result = fit(train, None, options)
    for model in (result.float_model, result.int8_model):
        assert [o.name for o in model.graph.output] == ["probabilities", "anomaly_score"]
        assert contract.ANOMALY_THRESHOLD in {p.key for p in model.metadata_props}
    pipeline = result.pipeline
    F = pipeline.transform(X)
    (score,) = session(result.float_model).run(["anomaly_score"], {"window": X})
    np.testing.assert_allclose(score, pipeline.network_.score_samples(F), rtol=1e-4, atol=1e-5)
    proba = session(result.float_model).run(["probabilities"], {"window": X})[0]
    np.testing.assert_allclose(proba, pipeline.predict_proba(X), atol=1e-4)
    # a window unlike anything in training (a stuck sensor) is flagged, normal ones are not
    threshold = pipeline.network_.detector_.threshold_
    stuck, _ = synthetic.make_fault_windows(10, window=64, faults=("stuck",), seed=9)
    (odd,) = session(result.int8_model).run(["anomaly_score"], {"window": stuck})
    assert (odd > threshold).mean() >= 0.9
    assert (score > threshold).mean() <= 0.05
    flagged = result.report["anomaly"]["flagged"]["train"]
    assert flagged["n"] == len(X) and flagged["int8_float_agreement"] >= 0.95
    assert flagged["float"] == pytest.approx((score > threshold).mean())


@pytest.mark.slow
def test_fit_with_unlabelled_windows_pretrains(recordings, tmp_path):
    labelled = tmp_path / "labelled.csv"
    synthetic.write_recording(labelled, [("normal", 1500), ("drift", 1500)], seed=4)
    out = tmp_path / "m"
    trainer("fit", str(labelled), "--window", "64", "--features", "stats", "--hidden", "8",
            "--unlabelled", str(recordings / "normal.csv"), "--out", str(out))
    r = json.loads((out / "report.json").read_text())
    assert r["parameters"]["network"]["pretrain"] == "rbm"
    assert r["metrics"]["float"]["train"]["accuracy"] >= 0.9
    proc = trainer("fit", str(labelled), "--window", "64", "--features", "stats", "--hidden",
                   "8", "--unlabelled", str(tmp_path / "missing.csv"), "--out", str(out),
                   check=False)
    assert proc.returncode == 1 and "missing.csv" in proc.stderr
