"""The embedded broker, the demo's live scoring, and ``sigmoid-edge demo`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edge.mqtt import MqttError, connect_client
from edge.tools import demo
from tests.mqtt_helpers import Collector

pytest.importorskip("amqtt", reason="the demo extra (amqtt) is not installed")

from edge.tools.embedded_broker import EmbeddedBroker  # noqa: E402


@pytest.fixture
def embedded():
    broker = EmbeddedBroker().start()
    yield broker
    broker.stop()


def test_embedded_broker_carries_paho_traffic_in_order(embedded):
    n = 1000
    with Collector(embedded, "sensors/#", qos=1) as sub:
        pub = connect_client(embedded.url, mqtt_version="3.1.1")
        for i in range(n):
            pub.publish(f"sensors/dev{i % 4}/data", json.dumps({"i": i}), qos=1)
        msgs = sub.take(n, timeout=30)
        pub.disconnect()
        pub.loop_stop()
    assert [json.loads(m.payload)["i"] for m in msgs] == list(range(n))
    # Its speed (the demo needs well over 400 msg/s) is bench/bench_embedded_broker.py's job.


def test_embedded_broker_keeps_retained_messages_and_last_wills(embedded):
    will = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    will.will_set("sigmoid-edge/n1/status", "offline", qos=1, retain=True)
    will.connect(embedded.host, embedded.port)
    will.loop_start()
    will.publish("sigmoid-edge/n1/status", "online", qos=1, retain=True).wait_for_publish(5)
    with Collector(embedded, "sigmoid-edge/+/status") as sub:
        first = sub.get()
        assert (first.payload, first.retain) == (b"online", True)
        will.loop_stop()
        will._sock.close()  # an unclean drop: the broker publishes the will
        assert sub.get(timeout=90).payload == b"offline"


def test_embedded_broker_refuses_mqtt5_with_a_hint(embedded):
    with pytest.raises(MqttError, match="--mqtt-version 3.1.1"):
        connect_client(embedded.url, mqtt_version="5", timeout=5)


def test_embedded_broker_port_in_use_is_a_clear_error(embedded):
    with pytest.raises(RuntimeError, match="could not start"):
        EmbeddedBroker(port=embedded.port).start()


def test_live_score_leaves_windows_across_a_change_out():
    score = demo.LiveScore()
    score.on_label("dev1", {"label": "normal", "ts": 100.0}, 0)
    score.on_label("dev1", {"label": "imbalance", "ts": 101.0}, 0)

    def cls(start, end, label):
        return score.on_classification({"device": "dev1", "label": label, "confidence": 0.9,
                                        "window_start": start, "window_end": end,
                                        "model": {"sha256": "ab"}})

    assert cls(100.0, 100.99, "normal")["truth"] == "normal"
    assert cls(100.5, 101.49, "normal")["truth"] == ""  # straddles the change: not scored
    assert cls(101.0, 101.99, "normal")["truth"] == "imbalance"  # wrong
    assert (score.windows, score.scored, score.correct) == (3, 2, 1)
    assert score.accuracy == 0.5


def test_training_data_is_labelled_and_seeded(tmp_path):
    from edge.tools.sensorfiles import read_csv

    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert demo.write_training_data(a, devices=2, seconds=10, seed=3) == 2000
    demo.write_training_data(b, devices=2, seconds=10, seed=3)
    assert a.read_bytes() == b.read_bytes()
    log = read_csv(a)
    assert log.channels == ("x", "y", "z")
    assert set(log.label.tolist()) <= {"normal", "imbalance", "misalignment", "bearing_fault"}
    for dev in ("rec1", "rec2"):
        np.testing.assert_allclose(np.diff(log.ts[log.device == dev]), 0.01, atol=1e-6)


def _run_demo(out, *args):
    return subprocess.run(
        [sys.executable, "-m", "edge", "demo", "--out", str(out), "--no-live", *args],
        capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One full ``sigmoid-edge demo`` (embedded broker, training, daemon, simulator)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    t0 = time.monotonic()
    proc = _run_demo(out, "--devices", "2", "--duration", "8", "--train-seconds", "20")
    return proc, out, time.monotonic() - t0


@pytest.mark.slow
def test_demo_end_to_end_with_the_embedded_broker(demo_run):
    proc, out, _ = demo_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("demo: accuracy ")
    summary = json.loads((out / "summary.json").read_text())
    assert f"accuracy {summary['accuracy']:.3f}" in last
    assert summary["accuracy"] >= 0.8
    # 2 devices x 8 s x 100 Hz / hop 50: about 32 windows, nearly all classified.
    assert summary["windows"] >= 26 and summary["scored_windows"] >= 18
    assert summary["broker"] == "embedded amqtt"
    assert len(summary["model_sha256"]) == 1
    lines = (out / "classifications.jsonl").read_text().splitlines()
    assert len(lines) == summary["windows"]
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sigmoid-train fit" in proc.stdout


@pytest.mark.slow
def test_demo_with_a_real_broker_and_a_given_model(demo_run, tmp_path, broker):
    model = demo_run[1] / "model" / "model.int8.onnx"
    out = tmp_path / "again"
    proc = _run_demo(out, "--broker", broker.url, "--model", str(model), "--devices", "3",
                     "--duration", "5", "--no-plot", "--seed", "5", "--format", "batch")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["broker"] == broker.url and summary["accuracy"] >= 0.8
    assert summary["windows"] >= 20
    assert "sigmoid-train fit" not in proc.stdout
    assert not (out / "model").exists() and not (out / "report.png").exists()
