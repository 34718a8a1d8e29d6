"""``--capture``: the daemon publishes the windows it is unsure about, within its rate limit."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from edge.capture import Capture, capture_id
from edge.config import ConfigError
from tests.daemon_helpers import config, running, wait_for
from tests.models import mean_model
from tests.mqtt_helpers import Collector
from tests.test_daemon_anomaly import (  # noqa: F401 (a fixture)
    W,
    anomaly_model,
    publish_samples,
    stream_with_a_spike,
)

CAPTURES = "sigmoid-edge/testnode/capture/+"


@pytest.fixture
def model(tmp_path):
    # x, y, z; window 8, hop 4. A mean of 0 is "low" with confidence 0.88; a mean of 0.5
    # sits between "low" and "mid" (confidence 0.49): a known hard window.
    return mean_model(tmp_path / "model.onnx")


def send(collector: Collector, device: str, rows) -> None:
    payload = json.dumps({"samples": [list(map(float, r)) for r in rows]})
    collector.client.publish(f"sensors/{device}/a", payload, qos=1).wait_for_publish(5)


def test_uncertain_windows_are_captured_raw_and_rate_limited(broker, model):
    easy = np.zeros((8, 3))
    hard = np.full((8, 3), 0.5) + np.arange(8)[:, None] * 1e-3  # distinct samples
    with running(broker, model, capture="uncertain", capture_rate=3) as daemon, \
            Collector(broker, CAPTURES) as caps:
        send(caps, "pump1", easy)  # one confident window: not captured
        send(caps, "pump1", np.concatenate([hard] * 5))  # 10 more windows, all hard
        send(caps, "pump2", hard)  # another device has its own bucket
        wait_for(lambda: daemon.stats.windows == 1 + 10 + 1, 10, "12 windows")
        wait_for(lambda: daemon.stats.captures == 4, 10, "4 captures")
        docs = [json.loads(m.payload) for m in caps.take(4)]
        snap = daemon.stats.snapshot()
    by_device = {d: [x for x in docs if x["device"] == d] for d in ("pump1", "pump2")}
    # pump1 had 10 hard windows (the first window, on easy samples, overlaps one of them
    # by hop 4), a bucket of 3 per hour: 3 published, the rest counted, not queued.
    assert len(by_device["pump1"]) == 3 and len(by_device["pump2"]) == 1
    assert snap["captures"] == 4 and snap["captures_limited"] >= 6
    first = by_device["pump2"][0]
    assert first["channels"] == ["x", "y", "z"] and first["reason"] == "uncertain"
    np.testing.assert_allclose(first["samples"], hard, atol=1e-6)  # the window, raw
    assert first["label"] in ("low", "mid") and first["confidence"] < 0.6
    assert first["confidence"] == pytest.approx(max(first["probabilities"].values()))
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    assert first["model"]["sha256"] == sha and first["node"] == "testnode"
    assert first["capture_id"] == capture_id("testnode", "pump2", first["window_start"], sha)
    assert "anomaly_score" not in first


def test_capture_none_publishes_nothing_and_costs_no_object(broker, model):
    with running(broker, model) as daemon, Collector(broker, CAPTURES, "edge/+/+") as out:
        send(out, "pump1", np.full((8, 3), 0.5))
        msg = out.get()
    assert daemon.runner.capture is None
    assert msg.topic == "edge/pump1/classification" and daemon.stats.captures == 0


def test_selection_modes_and_sample():
    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.5, 0.5]], np.float32)
    flags = np.array([True, False, False])
    assert Capture("uncertain", "t/{device}", "n", below=0.6).select(probs, None)[0].tolist() \
        == [1, 2]
    assert Capture("anomalies", "t/{device}", "n").select(probs, flags)[0].tolist() == [0]
    assert Capture("all", "t/{device}", "n").select(probs, None)[0].tolist() == [0, 1, 2]
    sampled = Capture("anomalies", "t/{device}", "n", sample=0.5, seed=1)
    idx, why = sampled.select(np.tile(probs, (200, 1)), np.zeros(600, bool))
    assert 200 < len(idx) < 400 and set(why) == {"sample"}


def test_a_capture_is_the_same_document_without_orjson(monkeypatch):
    """armv6l has no orjson wheel: the standard library writes the same capture."""
    from edge import capture

    cap = Capture("all", "t/{device}", "n1")
    window = (np.arange(12, dtype=np.float32).reshape(4, 3) / 7).astype(np.float32)
    args = dict(device="d", window=window, start=1.0, end=1.04, labels=["a", "b"],
                channels=["x", "y", "z"], probs=np.array([0.25, 0.75], np.float32),
                reason="all", model={"name": "m", "version": "1", "sha256": "ab" * 32},
                sample_rate_hz=100.0, score=0.5, anomaly=False)
    with_orjson = json.loads(cap.payload(**args))
    monkeypatch.setattr(capture, "orjson", None)
    without = json.loads(cap.payload(**args))
    assert abs(without.pop("captured_at") - with_orjson.pop("captured_at")) < 5
    samples = np.array(without.pop("samples"), np.float32)
    assert np.array_equal(samples, window)
    assert np.array_equal(np.array(with_orjson.pop("samples"), np.float32), window)
    assert without == with_orjson


def test_capture_config_errors(broker, model):
    with pytest.raises(ConfigError, match="capture .*must be one of"):
        config(broker, model, capture="sometimes")
    with pytest.raises(ConfigError, match="capture_rate"):
        config(broker, model, capture="all", capture_rate=0)
    with pytest.raises(ConfigError, match="capture_sample"):
        config(broker, model, capture="all", capture_sample=1.5)
    assert config(broker, model, min_confidence=0.7).capture_threshold == 0.7
    assert config(broker, model).capture_threshold == 0.6


def test_capture_anomalies_needs_an_anomaly_model(broker, model):
    from edge.daemon import Daemon
    from edge.models import ModelError

    with pytest.raises(ModelError, match="--capture anomalies needs"):
        Daemon(config(broker, model, capture="anomalies"))


def test_anomalies_mode_captures_the_flagged_window_with_its_score(broker, anomaly_model):  # noqa: F811
    x = stream_with_a_spike()  # six windows; the fifth has a spike
    with running(broker, anomaly_model, capture="anomalies") as daemon, \
            Collector(broker, CAPTURES) as caps:
        publish_samples(caps, "sensors/pump/acc", x)
        doc = json.loads(caps.get().payload)
        wait_for(lambda: daemon.stats.windows == 6, 10, "six windows")
    assert daemon.stats.captures == 1
    assert doc["reason"] == "anomalies" and doc["anomaly"] is True
    assert doc["anomaly_score"] > daemon.slot.current.anomaly_threshold
    np.testing.assert_allclose(doc["samples"], x[4 * W:5 * W], atol=1e-6)
