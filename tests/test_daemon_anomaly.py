"""The daemon publishes anomaly_score and anomaly for models that have them (real broker)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from edge import contract
from edge.contract import ContractError
from edge.models import ModelError, load_model
from edge.tools import synthetic
from tests.daemon_helpers import classifications, running, wait_for
from tests.models import mean_model
from tests.mqtt_helpers import Collector
from trainer.data import Dataset
from trainer.graph import GraphBuilder, float_input
from trainer.unsupervised import fit_anomaly

OUT = "edge/+/classification"
W = 32


@pytest.fixture(scope="module")
def anomaly_model(tmp_path_factory):
    normal, _ = synthetic.make_windows(300, window=W, labels=("normal",), seed=1)
    data = Dataset(normal, np.full(len(normal), ""), synthetic.CHANNELS, W, W,
                   synthetic.SAMPLE_RATE_HZ, "pump.csv", {})
    result = fit_anomaly(data, detector="kmeans")
    path = tmp_path_factory.mktemp("anomaly") / "model.onnx"
    path.write_bytes(result["model"].SerializeToString())
    return path


def stream_with_a_spike():
    """Six windows of continuous normal running; the fifth has one large spike."""
    x = synthetic.signal("normal", 6 * W, np.random.default_rng(5))
    x[4 * W + 10, 0] += 6.0
    return x


def publish_samples(collector, topic, x):
    lines = [json.dumps({"x": float(a), "y": float(b), "z": float(c), "ts": 100 + i / 100})
             for i, (a, b, c) in enumerate(x)]
    for info in [collector.client.publish(topic, line, qos=1) for line in lines]:
        info.wait_for_publish(5)


def test_outputs_carry_the_models_anomaly_score(broker, anomaly_model):
    x = stream_with_a_spike()
    with running(broker, anomaly_model) as daemon, Collector(broker, OUT) as out:
        assert daemon.slot.current.anomaly_threshold is not None
        publish_samples(out, "sensors/pump/acc", x)
        docs = classifications(out, 6)
    sess = ort.InferenceSession(str(anomaly_model), providers=["CPUExecutionProvider"])
    expected = sess.run(["anomaly_score"], {"window": x.reshape(6, W, 3)})[0]
    threshold = daemon.slot.current.anomaly_threshold
    np.testing.assert_allclose([d["anomaly_score"] for d in docs], expected, rtol=1e-5)
    assert [d["anomaly"] for d in docs] == (expected > threshold).tolist()
    assert [d["anomaly"] for d in docs] == [False, False, False, False, True, False]
    assert [d["label"] for d in docs][4] == "anomaly"


def test_only_anomalies_publishes_only_flagged_windows(broker, anomaly_model):
    with running(broker, anomaly_model, only_anomalies=True) as daemon, \
            Collector(broker, OUT) as out:
        publish_samples(out, "sensors/pump/acc", stream_with_a_spike())
        wait_for(lambda: daemon.stats.classifications == 6, what="six windows classified")
        docs = classifications(out, 1)
        wait_for(lambda: daemon.stats.published == 1)
    assert docs[0]["anomaly"] is True and docs[0]["window_start"] == pytest.approx(101.28)


def test_classifier_outputs_are_unchanged_without_an_anomaly_output(broker, tmp_path):
    model = mean_model(tmp_path / "m.onnx")
    with running(broker, model) as daemon, Collector(broker, OUT) as out:
        publish_samples(out, "sensors/a/b", np.full((8, 3), 2.0))
        doc = classifications(out, 1)[0]
    assert daemon.slot.current.anomaly_threshold is None
    assert "anomaly" not in doc and "anomaly_score" not in doc


def test_only_anomalies_needs_a_model_with_an_anomaly_output(broker, tmp_path):
    model = mean_model(tmp_path / "m.onnx")
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--model", str(model), "--broker", broker.url,
         "--only-anomalies", "--check-config"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "--only-anomalies needs a model with an 'anomaly_score' output" in proc.stderr


def test_anomaly_output_without_threshold_is_rejected(tmp_path):
    g = GraphBuilder("no-threshold")
    mean = g.op("ReduceMean", ["window", g.const("axes", np.array([1, 2], np.int64))],
                name="mean", keepdims=0)
    g.rename(mean, contract.ANOMALY_OUTPUT)
    ones = g.op("Unsqueeze", [mean, g.const("axis", np.array([1], np.int64))], name="col")
    g.rename(g.op("Softmax", [ones], name="p", axis=1), contract.OUTPUT_NAME)
    meta = {"labels": ["normal"], "channels": ["x"], "window": 4, "hop": 4, "name": "n",
            "version": "1"}
    model = g.model([float_input("window", ["batch", 4, 1])],
                    [float_input(contract.OUTPUT_NAME, ["batch", 1]),
                     float_input(contract.ANOMALY_OUTPUT, ["batch"])],
                    contract.encode_metadata(meta))
    path = tmp_path / "bad.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match="no numeric 'anomaly_threshold'"):
        load_model(path)
    info = contract.decode_metadata({**contract.encode_metadata(meta),
                                     "anomaly_threshold": "2.5"})
    assert contract.anomaly_threshold(info) == 2.5
    with pytest.raises(ContractError):
        contract.check_session(ort.InferenceSession(model.SerializeToString()),
                               contract.decode_metadata(contract.encode_metadata(meta)))


def stream_with_spikes(windows=(1, 4, 5), n=8):
    """``n`` windows of normal running with one large spike in each of ``windows``."""
    x = synthetic.signal("normal", n * W, np.random.default_rng(5))
    for k in windows:
        x[k * W + 10, 0] += 6.0
    return x


def test_k_of_n_rule_alarms_only_on_repeated_anomalous_windows(broker, anomaly_model):
    x = stream_with_spikes()
    with running(broker, anomaly_model, anomaly_min_windows=2,
                 anomaly_window_count=3) as daemon, Collector(broker, OUT) as out, \
            Collector(broker, "sigmoid-edge/+/stats") as stats_out:
        publish_samples(out, "sensors/pump/acc", x)
        docs = classifications(out, 8)
        wait_for(lambda: daemon.stats.published == 8)
        daemon.publish_stats()
        published = json.loads(stats_out.get().payload)
    sess = ort.InferenceSession(str(anomaly_model), providers=["CPUExecutionProvider"])
    scores = sess.run(["anomaly_score"], {"window": x.reshape(8, W, 3)})[0]
    flags = (scores > daemon.slot.current.anomaly_threshold).tolist()
    assert flags == [False, True, False, False, True, True, False, False]
    assert [d["anomaly_window"] for d in docs] == flags
    # 2 of the last 3: the lone spike of window 1 is no alarm; windows 4 and 5 are
    assert [d["anomaly"] for d in docs] == [False] * 5 + [True, True, False]
    assert (published["anomalous_windows"], published["anomaly_alarms"]) == (3, 1)


def test_k_of_n_rule_keeps_devices_apart():
    from edge.runner import PostProcess

    post = PostProcess(("normal", "anomaly"), anomaly_min_windows=2)  # N defaults to K
    # a and b interleaved: a has two anomalous windows in a row, b alternates
    devices = ["a", "b", "a", "b", "a", "b"]
    scores = [3.0, 3.0, 3.0, 0.0, 0.0, 3.0]
    flags, alarms, onsets = post.anomalies(devices, scores, threshold=1.0)
    assert flags == [True, True, True, False, False, True]
    assert alarms == [False, False, True, False, False, False]
    assert onsets == 1
    # the rule off: every anomalous window is an alarm, onsets counted per device
    flags, alarms, onsets = PostProcess(("n", "a")).anomalies(devices, scores, 1.0)
    assert alarms == flags and onsets == 3


@pytest.mark.parametrize(("args", "message"), [
    (["--anomaly-min-windows", "3/2"], "K/N needs 0 < K <= N, got '3/2'"),
    (["--anomaly-min-windows", "3", "--anomaly-window-count", "2"],
     "anomaly_window_count (--anomaly-window-count): must be at least anomaly_min_windows "
     "(3), got 2"),
    (["--anomaly-min-windows", "two"], "expected K or K/N"),
    (["--anomaly-window-count", "5"], "anomaly_window_count (--anomaly-window-count): needs "
                                      "anomaly_min_windows"),
    (["--anomaly-min-windows", "2"], "--anomaly-min-windows needs a model with an "
                                     "'anomaly_score' output"),
])
def test_k_of_n_settings_are_checked(broker, tmp_path, args, message):
    model = mean_model(tmp_path / "m.onnx")
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--model", str(model), "--broker", broker.url,
         *args, "--check-config"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr
