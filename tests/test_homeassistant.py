"""Home Assistant MQTT discovery (--ha-discovery) against a real mosquitto and real clients.

The discovery templates are rendered with Jinja2 (what Home Assistant's templates are) on
the daemon's real classification messages, so a test fails if a template does not give
the label, the attributes or the anomaly state Home Assistant would show.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import jinja2
import numpy as np
import pytest

from edge import contract
from edge.config import ConfigError
from edge.homeassistant import Discovery, discovery_configs, off_delay, sanitize
from edge.models import load_model
from tests.daemon_helpers import DaemonProcess, config, running, wait_for
from tests.models import LABELS, GraphBuilder, float_input, mean_model
from tests.mqtt_helpers import Collector, mosquitto_pub, mosquitto_sub

STATUS = "sigmoid-edge/testnode/status"
OUT = "edge/+/classification"
CONFIGS = "homeassistant/+/+/config"
THRESHOLD = 5.0
MARKER = "hatest/marker"


def render(template: str, payload: bytes | str) -> str:
    """Render a Home Assistant value template the way HA does: ``value`` and ``value_json``."""
    text = payload.decode() if isinstance(payload, bytes) else payload
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(value=text, value_json=json.loads(text))


def anomaly_model(path, threshold: float = THRESHOLD):
    """The mean model's labels plus ``anomaly_score`` = max |sample| over the window."""
    c, k = 3, len(LABELS)
    g = GraphBuilder("test-anomaly")
    mean = g.op("ReduceMean", ["window", g.const("time", np.array([1], np.int64))],
                name="mean", keepdims=0)
    weights = np.tile(4.0 * np.arange(k, dtype=np.float32) / c, (c, 1))
    logits = g.op("Add", [g.op("MatMul", [mean, g.const("w", weights)], name="dense"),
                          g.const("b", -2.0 * np.arange(k, dtype=np.float32) ** 2)],
                  name="logits")
    g.rename(g.op("Softmax", [logits], name="softmax", axis=-1), contract.OUTPUT_NAME)
    squared = g.op("Mul", ["window", "window"], name="squared")  # |x| in the trainer's ops
    score = g.op("ReduceMax", [g.op("Sqrt", [squared], name="abs"),
                               g.const("all", np.array([1, 2], np.int64))],
                 name="peak", keepdims=0)
    g.rename(score, contract.ANOMALY_OUTPUT)
    meta = {"labels": list(LABELS), "channels": ["x", "y", "z"], "window": 8, "hop": 8,
            "sample_rate_hz": 100.0, "name": "test-anomaly", "version": "2",
            "anomaly_threshold": threshold}
    model = g.model([float_input("window", [None, 8, c])],
                    [float_input(contract.OUTPUT_NAME, [None, k]),
                     float_input(contract.ANOMALY_OUTPUT, [None])],
                    contract.encode_metadata(meta))
    path.write_bytes(model.SerializeToString())
    return path


def retained(broker, topic: str = "homeassistant/#") -> dict[str, dict]:
    """Every retained message under ``topic`` a new subscriber gets: {topic: JSON payload}.

    The broker sends a subscription's retained messages before it handles our later
    publish to a marker topic, so the marker arriving means all of them have.
    """
    with Collector(broker, topic, MARKER) as c:
        c.client.publish(MARKER, b"end", qos=1)
        out = {}
        while (m := c.get(timeout=10)).topic != MARKER:
            assert m.retain, f"{m.topic} arrived live, not as a retained message"
            out[m.topic] = json.loads(m.payload)
    return out


# Pure logic: the config documents and names.

@pytest.mark.parametrize("name", ["pump-1", "pump_1", "Pump1", "a-b_c"])
def test_sanitize_keeps_safe_names(name):
    assert sanitize(name) == name


def test_sanitize_makes_unsafe_names_safe_and_distinct():
    names = ["pump.1", "pump 1", "pump:1", "Küche 1", "pump_1", "温度", "a\u200bb"]
    out = [sanitize(n) for n in names]
    assert all(set(s) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
               for s in out)
    assert len(set(out)) == len(names)
    assert out[0].startswith("pump_1_") and out[0] != "pump_1"


def test_classifier_configs_follow_the_discovery_schema(tmp_path):
    model = load_model(mean_model(tmp_path / "m.onnx", name="vib", version="7"))
    (topic, payload), (btopic, bpayload), (stopic, spayload) = discovery_configs(
        "pump-1", model, node="pi-4")
    uid = "sigmoid-edge_pi-4_pump-1"
    assert topic == f"homeassistant/sensor/{uid}_label/config"
    doc = json.loads(payload)
    assert doc == {
        "name": "Label", "unique_id": f"{uid}_label", "icon": "mdi:label-outline",
        "value_template": "{{ value_json.label }}",
        "json_attributes_topic": "edge/pump-1/classification",
        "json_attributes_template": '{{ {"confidence": value_json.confidence, '
                                    '"probabilities": value_json.probabilities} | tojson }}',
        "state_topic": "edge/pump-1/classification",
        "availability_topic": "sigmoid-edge/pi-4/status",
        "payload_available": "online", "payload_not_available": "offline", "qos": 1,
        "device": {"identifiers": [uid], "name": "pump-1", "manufacturer": "sigmoid-edge",
                   "model": "vib", "sw_version": "7"},
        "origin": {"name": "sigmoid-edge", "sw_version": __import__("edge").__version__},
    }
    # No anomaly output: the anomaly entities are removed (empty retained payload).
    assert (btopic, bpayload) == (f"homeassistant/binary_sensor/{uid}_anomaly/config", "")
    assert (stopic, spayload) == (f"homeassistant/sensor/{uid}_anomaly_score/config", "")


def test_custom_prefix_topics_and_off_delay(tmp_path):
    model = load_model(anomaly_model(tmp_path / "a.onnx"))
    configs = dict(discovery_configs("Küche 1", model, node="pi.4", prefix="ha/disc",
                                     output_topic="out/{device}/cls", only_anomalies=True))
    uid = f"sigmoid-edge_{sanitize('pi.4')}_{sanitize('Küche 1')}"
    label = json.loads(configs[f"ha/disc/sensor/{uid}_label/config"])
    assert label["state_topic"] == "out/Küche 1/cls"
    assert label["device"]["name"] == "Küche 1"
    assert label["availability_topic"] == "sigmoid-edge/pi.4/status"
    anomaly = json.loads(configs[f"ha/disc/binary_sensor/{uid}_anomaly/config"])
    assert anomaly["device_class"] == "problem" and anomaly["off_delay"] == 60
    assert "off_delay" not in json.loads(discovery_configs(
        "d", model, node="n")[1][1])
    # Slow sensors: the delay covers two hops.
    slow = load_model(mean_model(tmp_path / "s.onnx", hop=400, sample_rate_hz=1.0))
    assert off_delay(slow.info) == 800 and off_delay(slow.info, hop=50) == 100


def test_discovery_stops_announcing_beyond_max_devices(tmp_path, caplog):
    model = load_model(mean_model(tmp_path / "m.onnx"))
    sent = []
    d = Discovery(lambda topic, payload, **kw: sent.append((topic, kw)), lambda: model,
                  node="n", max_devices=2)
    for name in ["a", "b", "a", "c", "d", "b"]:
        d.seen(name)
    assert d.devices == {"a", "b"}
    assert len(sent) == 6 and all(kw == {"qos": 1, "retain": True} for _, kw in sent)
    assert "not announcing 'c'" in caplog.text and "'d'" not in caplog.text
    assert d.republish() == 2 and len(sent) == 12


@pytest.mark.parametrize("prefix", ["", "home/#", "a//b", "/ha", "h+a"])
def test_bad_prefix_is_a_config_error(tmp_path, broker, prefix):
    model = mean_model(tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match=r"ha_prefix \(--ha-prefix\)"):
        config(broker, model, ha_discovery=True, ha_prefix=prefix)


def test_config_file_and_environment_enable_discovery(tmp_path):
    from edge.config import load_config

    model = mean_model(tmp_path / "m.onnx")
    toml = tmp_path / "c.toml"
    toml.write_text(f'model = "{model}"\nha_discovery = true\nha_prefix = "hass"\n')
    cfg = load_config(path=toml, env={})
    assert (cfg.ha_discovery, cfg.ha_prefix) == (True, "hass")
    cfg = load_config(cli={"model": str(model)}, env={"SIGMOID_EDGE_HA_DISCOVERY": "yes"})
    assert (cfg.ha_discovery, cfg.ha_prefix) == (True, "homeassistant")
    assert load_config(cli={"model": str(model)}, env={}).ha_discovery is False


# The real daemon process, mosquitto_pub/_sub and paho.

def test_daemon_process_announces_devices_and_answers_the_birth_message(broker, tmp_path):
    model = mean_model(tmp_path / "m.onnx", name="vib", version="3")
    with Collector(broker, STATUS, OUT) as out, \
            DaemonProcess(broker, model, tmp_path, "--ha-discovery") as d:
        assert out.get(15).payload == b"online"
        batch = json.dumps({"samples": [[2, 2, 2]] * 8})  # mean 2: label "high"
        mosquitto_pub(broker, "sensors/pump-1/acc", batch, qos=1)
        mosquitto_pub(broker, "sensors/Küche 1/acc", json.dumps({"samples": [[0, 0, 0]] * 8}),
                      qos=1)
        docs = {json.loads(m.payload)["device"]: m for m in out.take(2, 15)}

        # What a new subscriber (Home Assistant starting) finds: one retained config per
        # device; the anomaly configs were published empty, so nothing is retained there.
        configs = retained(broker)
        kitchen = sanitize("Küche 1")
        assert sorted(configs) == sorted([
            "homeassistant/sensor/sigmoid-edge_testnode_pump-1_label/config",
            f"homeassistant/sensor/sigmoid-edge_testnode_{kitchen}_label/config"])
        pairs = mosquitto_sub(broker, "homeassistant/sensor/sigmoid-edge_testnode_pump-1_label/"
                                      "config", 1)
        pump = json.loads(pairs[0][1])
        assert pump["unique_id"] == "sigmoid-edge_testnode_pump-1_label"
        assert pump["device"] == {"identifiers": ["sigmoid-edge_testnode_pump-1"],
                                  "name": "pump-1", "manufacturer": "sigmoid-edge",
                                  "model": "vib", "sw_version": "3"}
        kitchen_doc = configs[f"homeassistant/sensor/sigmoid-edge_testnode_{kitchen}_label/"
                              "config"]
        assert kitchen_doc["device"]["name"] == "Küche 1"

        # The state topic is where the classifications are, and the templates turn a real
        # classification message into the label and the attributes.
        for doc, device, label in ((pump, "pump-1", "high"), (kitchen_doc, "Küche 1", "low")):
            msg = docs[device]
            assert msg.topic == doc["state_topic"] == doc["json_attributes_topic"]
            assert render(doc["value_template"], msg.payload) == label
            attrs = json.loads(render(doc["json_attributes_template"], msg.payload))
            cls = json.loads(msg.payload)
            assert attrs == {"confidence": cls["confidence"],
                             "probabilities": cls["probabilities"]}
            assert set(attrs["probabilities"]) == set(LABELS)
        # Availability: the daemon's retained status is what HA reads.
        assert mosquitto_sub(broker, pump["availability_topic"], 1)[0][1] == \
            pump["payload_available"]

        with Collector(broker, CONFIGS, MARKER) as live:
            live.client.publish(MARKER, b"end", qos=1)
            while live.get().topic != MARKER:
                pass  # the retained copies
            # Home Assistant going offline is no reason to announce (the log counts the
            # births the daemon acted on); coming online is.
            mosquitto_pub(broker, "homeassistant/status", "offline")
            mosquitto_pub(broker, "homeassistant/status", "online")
            again = live.take(6, 10)  # 2 devices x (label, anomaly removal, score removal)
            time.sleep(0.5)
            assert live.messages.empty()
        assert not any(m.retain for m in again)  # sent now, not replayed
        by_topic = {m.topic: m.payload for m in again}
        assert json.loads(by_topic["homeassistant/sensor/sigmoid-edge_testnode_pump-1_label/"
                                   "config"]) == pump
        assert by_topic["homeassistant/binary_sensor/sigmoid-edge_testnode_pump-1_anomaly/"
                        "config"] == b""
        assert d.log().count("Home Assistant is online") == 1

        d.signal(__import__("signal").SIGTERM)
        assert d.wait(10) == 0
    # After the daemon stopped, the configs stay and the entities show unavailable.
    assert len(retained(broker)) == 2
    assert mosquitto_sub(broker, STATUS, 1)[0][1] == pump["payload_not_available"]


def test_anomaly_model_adds_a_problem_binary_sensor_and_a_score(broker, tmp_path):
    path = anomaly_model(tmp_path / "model.onnx")
    with running(broker, path, ha_discovery=True) as daemon, Collector(broker, OUT) as out:
        normal = [[1.0, 1.0, 1.0]] * 8
        spiky = [[1.0, 1.0, 1.0]] * 7 + [[9.0, 1.0, 1.0]]
        ts = [100.0 + i / 100 for i in range(16)]
        mosquitto_pub(broker, "sensors/pump-2/acc",
                      json.dumps({"samples": normal + spiky, "ts": ts}), qos=1)
        msgs = out.take(2, 10)
        configs = retained(broker)
    uid = "sigmoid-edge_testnode_pump-2"
    assert sorted(configs) == [f"homeassistant/binary_sensor/{uid}_anomaly/config",
                               f"homeassistant/sensor/{uid}_anomaly_score/config",
                               f"homeassistant/sensor/{uid}_label/config"]
    anomaly = configs[f"homeassistant/binary_sensor/{uid}_anomaly/config"]
    score = configs[f"homeassistant/sensor/{uid}_anomaly_score/config"]
    assert anomaly["device_class"] == "problem" and anomaly["unique_id"] == f"{uid}_anomaly"
    assert (anomaly["payload_on"], anomaly["payload_off"]) == ("ON", "OFF")
    assert "off_delay" not in anomaly
    assert score["state_class"] == "measurement"
    assert anomaly["device"] == score["device"] == \
        configs[f"homeassistant/sensor/{uid}_label/config"]["device"]
    docs = [json.loads(m.payload) for m in msgs]
    assert [d["anomaly"] for d in docs] == [False, True]
    assert [render(anomaly["value_template"], m.payload) for m in msgs] == ["OFF", "ON"]
    assert [float(render(score["value_template"], m.payload)) for m in msgs] == [1.0, 9.0]
    assert json.loads(render(anomaly["json_attributes_template"], msgs[1].payload)) == \
        {"anomaly_score": 9.0}
    assert daemon.ha.births == 0


def test_model_swap_updates_and_removes_the_anomaly_entities(broker, tmp_path):
    path = anomaly_model(tmp_path / "model.onnx")
    with running(broker, path, ha_discovery=True) as daemon, \
            Collector(broker, CONFIGS) as live:
        mosquitto_pub(broker, "sensors/m1/a", "[1, 1, 1]", qos=1)
        assert all(m.payload for m in live.take(3))
        assert len(retained(broker)) == 3
        # The new model has no anomaly output: its entities must go, the label stays.
        classifier = mean_model(tmp_path / "classifier.onnx", name="plain", version="9")
        shutil.copy(classifier, path)
        assert daemon.reload()
        assert [bool(m.payload) for m in live.take(3)] == [True, False, False]
        configs = retained(broker)
    assert list(configs) == ["homeassistant/sensor/sigmoid-edge_testnode_m1_label/config"]
    label = configs["homeassistant/sensor/sigmoid-edge_testnode_m1_label/config"]
    assert label["device"]["model"] == "plain" and label["device"]["sw_version"] == "9"


def test_without_the_flag_nothing_is_announced(broker, tmp_path):
    model = mean_model(tmp_path / "m.onnx")
    with running(broker, model) as daemon, Collector(broker, OUT) as out:
        mosquitto_pub(broker, "sensors/quiet/a", json.dumps({"samples": [[2, 2, 2]] * 8}),
                      qos=1)
        out.take(1, 10)
        mosquitto_pub(broker, "homeassistant/status", "online")
        assert daemon.ha is None
        assert retained(broker) == {}


def test_rejected_input_announces_nothing(broker, tmp_path):
    model = mean_model(tmp_path / "m.onnx")
    with running(broker, model, ha_discovery=True) as daemon:
        mosquitto_pub(broker, "sensors/junk/a", "not json", qos=1)
        mosquitto_pub(broker, "sensors/short/a", "[1, 2]", qos=1)
        wait_for(lambda: sum(daemon.stats.snapshot()["rejected"].values()) == 2,
                 what="two rejections")
        assert daemon.ha.devices == set() and retained(broker) == {}


def test_check_config_reports_a_bad_prefix(tmp_path):
    model = mean_model(tmp_path / "m.onnx")
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--model", str(model), "--ha-discovery",
         "--ha-prefix", "home/#", "--check-config"], capture_output=True, text=True,
        timeout=60)
    assert proc.returncode == 1
    assert "ha_prefix (--ha-prefix): must be Home Assistant's discovery prefix" in proc.stderr
