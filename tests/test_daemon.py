"""The edge daemon end to end: real mosquitto, real paho and mosquitto_pub/_sub clients."""

from __future__ import annotations

import hashlib
import json
import threading

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edge.runtime import onnxruntime_backend
from edge.tools import synthetic
from tests.daemon_helpers import classifications, running, wait_for
from tests.models import mean_model, offline_labels
from tests.mqtt_helpers import Collector, mosquitto_pub, mosquitto_sub

OUT = "edge/+/classification"


@pytest.fixture
def model(tmp_path):
    return mean_model(tmp_path / "model.onnx")  # x, y, z; window 8, hop 4


# The end-to-end tests marked with this run once per inference runtime (edge/runtime/); on a
# board without onnxruntime (deploy/armhf/verify.sh) only with numpy.
per_runtime = pytest.mark.parametrize("runtime", [
    pytest.param("onnxruntime", marks=pytest.mark.skipif(
        not onnxruntime_backend.available(), reason="onnxruntime is not installed")),
    "numpy"])


def publish_all(collector: Collector, topic: str, payloads, qos: int = 1) -> None:
    """Publish in order from the collector's own paho client and wait until all are sent."""
    infos = [collector.client.publish(topic, p, qos=qos) for p in payloads]
    for info in infos:
        info.wait_for_publish(5)


@per_runtime
def test_object_payloads_give_a_full_classification(broker, model, runtime):
    with running(broker, model, runtime=runtime), Collector(broker, OUT) as out:
        lines = "\n".join(json.dumps({"x": 2, "y": 2.5, "z": 1.5, "battery": 80})
                          for _ in range(8))
        mosquitto_pub(broker, "sensors/pump1/accel", lines, lines=True, qos=1)
        msg = out.get()
        doc = json.loads(msg.payload)
    assert msg.topic == "edge/pump1/classification" and msg.qos == 1
    assert doc["device"] == "pump1" and doc["label"] == "high"
    assert set(doc["probabilities"]) == {"low", "mid", "high"}
    assert doc["confidence"] == max(doc["probabilities"].values())
    assert abs(sum(doc["probabilities"].values()) - 1) < 1e-4
    assert doc["window_start"] <= doc["window_end"]
    assert doc["model"] == {"name": "test-mean", "version": "1",
                            "sha256": hashlib.sha256(model.read_bytes()).hexdigest()}


def test_output_qos_sets_the_qos_of_classifications(broker, model):
    with running(broker, model, output_qos=0), Collector(broker, OUT) as out:
        mosquitto_pub(broker, "sensors/pump2/accel", "[2, 2, 2]\n" * 8, lines=True, qos=1)
        msg = out.get()
    assert msg.topic == "edge/pump2/classification" and msg.qos == 0
    assert json.loads(msg.payload)["label"] == "high"


@pytest.mark.parametrize("fmt", ["object", "array", "batch", "batch_ts", "objects", "ts"])
def test_every_payload_format(broker, model, fmt):
    one = {"x": 0.1, "y": 0.0, "z": 0.2}
    payloads = {
        "object": [json.dumps(one)] * 8,
        "array": ["[0.1, 0.0, 0.2]"] * 8,
        "batch": [json.dumps({"samples": [[0.1, 0.0, 0.2]] * 8})],
        "batch_ts": [json.dumps({"samples": [[0.1, 0.0, 0.2]] * 8,
                                 "ts": [100 + i / 100 for i in range(8)]})],
        "objects": [json.dumps([dict(one, ts=100 + i / 100) for i in range(8)])],
        "ts": [json.dumps(dict(one, ts=100 + i / 100)) for i in range(8)],
    }[fmt]
    with running(broker, model) as daemon, Collector(broker, OUT) as out:
        publish_all(out, "sensors/dev/a", payloads)
        doc = classifications(out, 1)[0]
        assert daemon.stats.rejected == {}
    assert doc["label"] == "low" and doc["device"] == "dev"
    if fmt in ("batch_ts", "objects", "ts"):  # the device's own times are reported
        assert doc["window_start"] == 100.0 and doc["window_end"] == pytest.approx(100.07)


def test_plain_numbers_for_a_one_channel_model(broker, tmp_path):
    model = mean_model(tmp_path / "one.onnx", channels=("level",), window=4, hop=4)
    with running(broker, model), Collector(broker, OUT) as out:
        mosquitto_pub(broker, "sensors/tank/level", "1\n1\n1.0\n1", lines=True, qos=1)
        doc = classifications(out, 1)[0]
    assert doc["label"] == "mid"


def test_labels_with_quotes_and_braces_come_out_as_valid_json(broker, tmp_path):
    # The output is formatted by hand (str.format), so a label must never be read as a
    # placeholder or break the JSON.
    labels = ('say "hi"', "{0}", "a}b{")
    model = mean_model(tmp_path / "odd.onnx", labels=labels)
    with running(broker, model), Collector(broker, OUT) as out:
        mosquitto_pub(broker, "sensors/odd/a", "[1, 1, 1]\n" * 8, lines=True, qos=1)
        doc = classifications(out, 1)[0]
    assert list(doc["probabilities"]) == list(labels)
    assert doc["label"] == "{0}"  # mean 1: the middle label
    assert abs(sum(doc["probabilities"].values()) - 1) < 1e-4


def test_zigbee2mqtt_flat_json_with_a_channel_mapping(broker, tmp_path):
    model = mean_model(tmp_path / "z.onnx", channels=("t", "h"), window=4, hop=4)
    z2m = {"temperature": 2.0, "humidity": 2.0, "linkquality": 120, "battery": 97,
           "update": {"state": "idle"}}
    with running(broker, model, input_topic="zigbee2mqtt/{device}",
                 channels={"t": "temperature", "h": "humidity"}), Collector(broker, OUT) as out:
        publish_all(out, "zigbee2mqtt/kitchen_sensor", [json.dumps(z2m)] * 4)
        doc = classifications(out, 1)[0]
    assert doc["device"] == "kitchen_sensor" and doc["label"] == "high"


def test_tasmota_nested_json_with_a_channel_mapping(broker, tmp_path):
    model = mean_model(tmp_path / "t.onnx", channels=("power", "current"), window=4, hop=4)
    tasmota = {"Time": "2024-05-01T12:00:00",
               "ENERGY": {"Total": 12.5, "Power": 1.0, "Current": 1.0, "Voltage": 230}}
    with running(broker, model, input_topic="tele/{device}/SENSOR",
                 channels={"power": "ENERGY.Power", "current": "ENERGY.Current"}), \
            Collector(broker, OUT) as out:
        publish_all(out, "tele/washer/SENSOR", [json.dumps(tasmota)] * 4)
        publish_all(out, "tele/washer/STATE", [json.dumps({"Uptime": "1T"})] * 4)  # not ours
        doc = classifications(out, 1)[0]
    assert doc["device"] == "washer" and doc["label"] == "mid"


@per_runtime
def test_replayed_windows_give_exactly_the_offline_labels(broker, tmp_path, runtime):
    X, _ = synthetic.make_windows(n_per_class=6, window=16, channels=3, seed=3)
    rng = np.random.default_rng(0)
    model = mean_model(tmp_path / "r.onnx", window=16, hop=16, labels=synthetic.LABELS,
                       weights=rng.normal(0, 30, (3, 4)).astype(np.float32),
                       bias=rng.normal(0, 1, 4).astype(np.float32))
    expected = offline_labels(model, X)
    assert len(set(expected)) > 1  # the replay must be able to tell labels apart
    with running(broker, model, runtime=runtime), Collector(broker, OUT) as out:
        # Half the windows sample by sample as JSON objects, half as one batch each.
        payloads = []
        for i, w in enumerate(X):
            if i % 2:
                payloads.append(json.dumps({"samples": w.tolist()}))
            else:
                payloads += [json.dumps(dict(zip("xyz", row, strict=True)))
                             for row in w.tolist()]
        publish_all(out, "sensors/replay/a", payloads)
        got = [d["label"] for d in classifications(out, len(X))]
    assert got == expected


@per_runtime
def test_windows_from_many_devices_are_batched_into_one_inference(broker, model, runtime):
    with running(broker, model, runtime=runtime) as daemon, Collector(broker, OUT) as out:
        # Hold the worker after its first cycle, so the other devices' messages queue up
        # meanwhile; released, it must classify all of them in one onnxruntime call.
        gate, held = threading.Event(), threading.Event()

        def hold_once():
            if not held.is_set():
                held.set()
                gate.wait(10)

        daemon.runner.after_cycle.append(hold_once)
        payload = json.dumps({"samples": [[2, 2, 2]] * 8})  # one window per device
        publish_all(out, "sensors/d0/a", [payload])
        assert held.wait(10), "the worker never finished its first cycle"
        for i in range(1, 20):
            out.client.publish(f"sensors/d{i}/a", payload, qos=1)
        wait_for(lambda: len(daemon.runner.queue) == 19, what="19 messages queued")
        gate.set()
        docs = classifications(out, 20)
        wait_for(lambda: daemon.stats.classifications == 20)
        assert daemon.stats.inferences == 2  # d0 alone, then d1..d19 together
        assert daemon.stats.batch_max == 19
    assert sorted(d["device"] for d in docs) == sorted(f"d{i}" for i in range(20))


BAD = [
    (b"{not json", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    (b"[1, 2]", "wrong_width"),
    (b"[1, 2, 3, 4]", "wrong_width"),
    (b'{"samples": [[1, 2, 3], [1, 2]]}', "wrong_width"),
    (b"[1, NaN, 2]", "not_finite"),
    (b'{"x": Infinity, "y": 1, "z": 1}', "not_finite"),
    (b'{"x": 1e400, "y": 1, "z": 1}', "not_finite"),
    (b'{"x": "1", "y": 1, "z": 1}', "not_a_number"),
    (b'{"x": true, "y": 1, "z": 1}', "not_a_number"),
    (b'{"x": 1, "y": 1}', "missing_channel"),
    (b"[" * 50 + b"1" + b"]" * 50, "too_deep"),
    (b"[" * 160000 + b"]" * 160000, "too_large"),
    (b"null", "bad_type"),
    (b"[]", "empty"),
    (b'{"x": 1, "y": 1, "z": 1, "ts": "yesterday"}', "bad_ts"),
]


def test_malformed_input_is_counted_and_does_not_poison_the_window(broker, model):
    with running(broker, model) as daemon, Collector(broker, OUT, "sigmoid-edge/+/errors") as out:
        good = b'{"x": 0.1, "y": 0.1, "z": 0.1}'
        payloads = []
        for bad, _ in BAD:  # a bad message between every two good samples of the same device
            payloads += [good, bad]
        payloads += [good] * (16 - len(BAD))
        publish_all(out, "sensors/m1/a", payloads)
        wait_for(lambda: daemon.stats.messages_in == len(payloads))
        wait_for(lambda: daemon.stats.published == 3)
        msgs = []
        while sum(m.topic.endswith("classification") for m in msgs) < 3:
            msgs.append(out.get())
        counts = dict(daemon.stats.rejected)
    results = [json.loads(m.payload) for m in msgs if m.topic.endswith("classification")]
    errors = [json.loads(m.payload) for m in msgs if m.topic.endswith("errors")]
    expected: dict[str, int] = {}
    for _, reason in BAD:
        expected[reason] = expected.get(reason, 0) + 1
    assert counts == expected
    # 16 good samples, window 8, hop 4: three windows, every one made of good samples only.
    assert [r["label"] for r in results] == ["low"] * 3
    assert all(r["device"] == "m1" for r in results)
    assert errors and {e["reason"] for e in errors} <= set(expected)
    assert all(e["topic"] for e in errors)


@pytest.mark.parametrize("device", ["a+b", "a#", "", "x\x00y", "tab\there", "del\x7f"])
def test_wildcard_and_control_device_names_never_reach_an_output(broker, model, device):
    # mosquitto refuses '+', '#' and control characters in topic names (it disconnects the
    # publisher), other brokers may not: feed the handler real paho messages.
    with running(broker, model) as daemon:
        msg = mqtt.MQTTMessage(topic=f"sensors/{device}/a".encode())
        msg.payload = b"[1, 1, 1]"
        for _ in range(8):
            daemon.on_input(msg)
        assert daemon.stats.rejected["bad_device"] == 8
        assert len(daemon.runner.queue) == 0 and daemon.stats.published == 0


def test_gap_in_device_time_restarts_the_window(broker, model):
    with running(broker, model) as daemon, Collector(broker, OUT) as out:
        first = [json.dumps({"x": 2, "y": 2, "z": 2, "ts": 10 + i / 100}) for i in range(6)]
        # 60 s later: the six old samples must not be mixed into the next window.
        later = [json.dumps({"x": 0, "y": 0, "z": 0, "ts": 70 + i / 100}) for i in range(8)]
        publish_all(out, "sensors/g/a", first + later)
        doc = classifications(out, 1)[0]
        assert daemon.stats.gaps == 1
    assert doc["label"] == "low" and doc["window_start"] == 70.0


def test_postprocessing_threshold_and_on_change(broker, model):
    with running(broker, model, min_confidence=0.85, on_change=True) as daemon, \
            Collector(broker, OUT) as out:
        mid = '{"x": 1, "y": 1, "z": 1}'  # about 0.79 confident "mid": below the threshold
        high = '{"x": 2, "y": 2, "z": 2}'  # about 0.88 confident "high"
        publish_all(out, "sensors/p/a", [mid] * 16 + [high] * 16)
        wait_for(lambda: daemon.stats.classifications == 7)
        docs = classifications(out, 2)
        assert daemon.stats.published == 2
    assert [d["label"] for d in docs] == ["uncertain", "high"]


def test_smoothing_averages_the_last_k_probability_vectors(broker, model):
    with running(broker, model, smoothing=2) as daemon, Collector(broker, OUT) as out:
        low, high = '{"x": 0, "y": 0, "z": 0}', '{"x": 2, "y": 2, "z": 2}'
        publish_all(out, "sensors/s/a", [low] * 4 + [high] * 4 + [high] * 4)
        docs = classifications(out, 2)
        wait_for(lambda: daemon.stats.classifications == 2)
    w = np.array([[0.0] * 3] * 4 + [[2.0] * 3] * 4, np.float32)[None]
    first = daemon.slot.current.predict(w)[0]
    second = daemon.slot.current.predict(np.full((1, 8, 3), 2.0, np.float32))[0]
    mean = (first + second) / 2
    assert docs[1]["probabilities"]["high"] == pytest.approx(float(mean[2]), abs=1e-5)


@per_runtime
def test_status_is_retained_and_stats_are_published(broker, model, runtime):
    with running(broker, model, runtime=runtime) as daemon, \
            Collector(broker, "sigmoid-edge/+/stats") as stats:
        mosquitto_pub(broker, "sensors/ms/a", "\n".join(["[2, 2, 2]"] * 8 + ["oops"]), lines=True)
        wait_for(lambda: daemon.stats.published == 1 and daemon.stats.rejected)
        daemon.publish_stats()
        snap = json.loads(stats.get().payload)
        # A late subscriber sees the retained status.
        assert mosquitto_sub(broker, "sigmoid-edge/testnode/status", 1) == [
            ("sigmoid-edge/testnode/status", "online")]
    assert snap["messages_in"] == 9 and snap["rejected"] == {"invalid_json": 1}
    assert snap["windows"] == 1 and snap["inferences"] == 1 and snap["published"] == 1
    assert snap["drops"] == 0 and snap["queue_depth"] == 0 and snap["rss_mb"] > 10
    assert snap["latency_ms"]["p99"] >= snap["latency_ms"]["p50"] > 0
    assert snap["node"] == "testnode" and snap["model"]["name"] == "test-mean"
    assert snap["runtime"] == runtime
    # After a clean stop the retained status says offline.
    assert mosquitto_sub(broker, "sigmoid-edge/testnode/status", 1) == [
        ("sigmoid-edge/testnode/status", "offline")]


@per_runtime
def test_reload_between_batches_with_other_channels(broker, model, tmp_path, runtime):
    one = mean_model(tmp_path / "one.onnx", channels=("level",), window=4, hop=4, version="9")
    original = model.read_bytes()
    with running(broker, model, runtime=runtime) as daemon, Collector(broker, OUT) as out:
        publish_all(out, "sensors/s/a", ["[2, 2, 2]"] * 6)  # a half-full window of 3 channels
        wait_for(lambda: daemon.stats.samples == 6)
        model.write_bytes(one.read_bytes())
        assert daemon.reload("test")
        publish_all(out, "sensors/s/a", ["0.1"] * 4)  # the new model's one channel
        doc = classifications(out, 1)[0]
        assert daemon.stats.model_swaps == 1 and daemon.slot.previous.info.version == "1"
        # Refused: the configured channel mapping does not fit; version 9 keeps serving.
        daemon.cfg.channels = {"nope": "x"}
        model.write_bytes(original)
        assert not daemon.reload("test")
        assert daemon.stats.model_rejects == 1 and daemon.slot.current.info.version == "9"
    assert doc["label"] == "low" and doc["model"]["version"] == "9"
    assert daemon.slot.current.runtime == runtime  # a reload keeps the configured runtime
    assert doc["model"]["sha256"] == hashlib.sha256(one.read_bytes()).hexdigest()
