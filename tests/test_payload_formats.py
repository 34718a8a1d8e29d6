"""Binary sample blocks, CBOR and Sparkplug B inputs: unit rules, then end to end on mosquitto."""

from __future__ import annotations

import json

import cbor2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edge import sparkplug
from edge.formats import Decoder
from edge.payload import PayloadParser, Rejected
from edge.payload_binary import MAGIC, encode_block, parse_block
from tests.daemon_helpers import classifications, running, wait_for
from tests.models import mean_model, offline_labels
from tests.mqtt_helpers import Collector

OUT = "edge/+/classification"
XYZ = ("x", "y", "z")
T0 = 1_700_000_000.0


@pytest.fixture
def model(tmp_path):
    return mean_model(tmp_path / "model.onnx")  # x, y, z; window 8, hop 4; 100 Hz


def rejected(fn, *args) -> str:
    with pytest.raises(Rejected) as exc:
        fn(*args)
    return exc.value.reason


# ------------------------------------------------------------------------- binary blocks

def test_block_round_trip_float32_int16_and_times():
    x = np.arange(12, dtype=np.float32).reshape(4, 3) - 5.5
    values, ts = parse_block(encode_block(x, start=T0, period=0.01), 3)
    assert values.dtype == np.float32 and np.array_equal(values, x)
    np.testing.assert_allclose(ts, T0 + 0.01 * np.arange(4))
    values, ts = parse_block(encode_block(x), 3)
    assert ts is None
    raw = np.array([[100, -200, 300], [-32768, 32767, 0]])
    values, ts = parse_block(encode_block(raw, start=T0, scale=[0.01, 0.5, 2.0]), 3)
    assert ts == T0
    np.testing.assert_allclose(values, raw * np.array([0.01, 0.5, 2.0]), rtol=1e-6)


def test_malformed_blocks_are_rejected_by_reason():
    good = encode_block(np.ones((4, 3)), start=T0, period=0.01)
    assert rejected(parse_block, good[:-1], 3) == "bad_block"  # truncated
    assert rejected(parse_block, good + b"\0", 3) == "bad_block"  # trailing bytes
    assert rejected(parse_block, good[:4] + b"\x02" + good[5:], 3) == "bad_block"  # version
    assert rejected(parse_block, good[:5] + b"\x07" + good[6:], 3) == "bad_block"  # dtype
    assert rejected(parse_block, good, 2) == "wrong_width"
    assert rejected(parse_block, MAGIC + b"\x01", 3) == "bad_block"
    assert rejected(parse_block, encode_block(np.full((2, 3), np.nan)), 3) == "not_finite"
    assert rejected(parse_block, encode_block(np.ones((2, 3)), start=np.inf), 3) == "bad_ts"
    assert rejected(parse_block, encode_block(np.ones((2, 3)), start=T0, period=-1.0),
                    3) == "bad_ts"
    overflow = encode_block(np.full((2, 3), 30000), scale=[1e38] * 3)
    assert rejected(parse_block, overflow, 3) == "out_of_range"
    assert rejected(parse_block, encode_block(np.array([[1, np.inf, 2]])), 3) == "out_of_range"
    # Finite values near float32's limit are kept, though their sum overflows.
    big = np.full((4, 3), 3e38, np.float32)
    assert np.array_equal(parse_block(encode_block(big), 3)[0], big)


def test_decoder_dispatch_by_magic_and_content_type():
    parser = PayloadParser(XYZ)
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
    doc = {"samples": x.tolist(), "ts": T0}
    json_dec, cbor_dec = Decoder("json", parser), Decoder("cbor", parser)
    assert np.array_equal(json_dec.parse(encode_block(x))[0], x)  # auto-detected
    assert np.array_equal(json_dec.parse(cbor2.dumps(doc), "application/cbor")[0], x)
    assert np.array_equal(cbor_dec.parse(cbor2.dumps(doc))[0], x)
    assert cbor_dec.parse(cbor2.dumps({"x": 1, "y": 2, "z": 3, "ts": T0})) == ([1, 2, 3], T0)
    assert np.array_equal(cbor_dec.parse(json.dumps(doc).encode(), "application/json")[0], x)
    assert rejected(Decoder("binary", parser).parse, json.dumps(doc).encode()) == "bad_block"
    assert rejected(cbor_dec.parse, b"\xff\x00") == "invalid_cbor"
    assert rejected(cbor_dec.parse, b"\x81" * 50) == "too_deep"
    assert rejected(cbor_dec.parse, cbor2.dumps([1.0, float("nan"), 2.0])) == "not_finite"


# ---------------------------------------------------------------------------- sparkplug

def test_a_stray_break_code_is_invalid_cbor_also_from_cbor2_before_6(monkeypatch):
    """cbor2 5.x in pure Python (a 32-bit Pi without a compiler) returns its break marker
    for ``0xff`` where 6.x raises: both are invalid_cbor."""
    class BreakMarkerType:  # cbor2._types.BreakMarkerType, as 5.x returns it
        pass

    class Cbor2Before6:
        @staticmethod
        def loads(payload, max_depth=None):
            return BreakMarkerType() if payload[:1] == b"\xff" else cbor2.loads(payload)

    monkeypatch.setitem(__import__("sys").modules, "cbor2", Cbor2Before6)
    dec = Decoder("cbor", PayloadParser(XYZ))
    assert rejected(dec.parse, b"\xff\x00") == "invalid_cbor"
    assert dec.parse(cbor2.dumps({"x": 1, "y": 2, "z": 3, "ts": T0})) == ([1, 2, 3], T0)


def test_sparkplug_aliases_births_rebirths_and_sequence_gaps():
    dec = sparkplug.SparkplugDecoder(XYZ)
    aliases = {"x": 11, "y": 12, "z": 13}
    data = "spBv1.0/plant/DDATA/gw1/pump"
    x = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    by_alias = sparkplug.encode_samples(x, XYZ, aliases=aliases, start_ms=1000, period_ms=10,
                                        seq=1)
    assert rejected(dec.handle, data, by_alias) == "unknown_alias"  # no birth yet
    assert dec.handle("spBv1.0/plant/NBIRTH/gw1", sparkplug.encode([], seq=0)) == []
    events = dec.handle("spBv1.0/plant/DBIRTH/gw1/pump", sparkplug.birth(XYZ, aliases, seq=1))
    assert events == [("pump", None, None)]  # a birth restarts the device's window
    [(device, values, ts)] = dec.handle(data, sparkplug.encode_samples(
        x, XYZ, aliases=aliases, start_ms=1000, period_ms=10, seq=2))
    assert device == "pump" and np.array_equal(values, x)
    np.testing.assert_allclose(ts, [1.0, 1.01])
    # seq 3 is lost: the device's window restarts before the new samples.
    events = dec.handle(data, sparkplug.encode_samples(x, XYZ, aliases=aliases, seq=4))
    assert [e[1] is None for e in events] == [True, False]
    # Report by exception: y alone, x and z keep their last values.
    [(_, values, _)] = dec.handle(data, sparkplug.encode([{"name": "y", "float_value": 9.0}],
                                                         seq=5))
    assert values.tolist() == [[4, 9, 6]]
    # A new NBIRTH restarts every device of the node; a DDEATH the device.
    assert dec.handle("spBv1.0/plant/NBIRTH/gw1", sparkplug.encode([], seq=0)) == \
        [("pump", None, None)]
    assert dec.handle("spBv1.0/plant/DDEATH/gw1/pump", sparkplug.encode([], seq=1)) == \
        [("pump", None, None)]
    assert dec.handle("spBv1.0/plant/DCMD/gw1/pump", b"\x00\x01") == []  # not data
    assert rejected(dec.handle, data, b"\x12\xff") == "invalid_sparkplug"
    assert rejected(dec.handle, data, sparkplug.encode(
        [{"name": "x", "string_value": "hot"}, {"name": "y", "float_value": 1.0},
         {"name": "z", "float_value": 1.0}], seq=2)) == "not_a_number"


def test_sparkplug_signed_integers_and_doubles():
    dec = sparkplug.SparkplugDecoder(XYZ)
    payload = sparkplug.encode([
        {"name": "x", "datatype": 3, "int_value": 2 ** 32 - 5},  # Int32 -5
        {"name": "y", "datatype": 4, "long_value": 2 ** 64 - 7},  # Int64 -7
        {"name": "z", "datatype": 10, "double_value": 0.25}], timestamp=5000)
    [(_, values, ts)] = dec.handle("spBv1.0/g/DDATA/n/d", payload)
    assert values.tolist() == [[-5, -7, 0.25]] and ts == 5.0


def test_sparkplug_layout_template_per_device(monkeypatch):
    """A device's uniform DDATA leaves a template; a rebirth drops it; big ones keep none."""
    dec = sparkplug.SparkplugDecoder(XYZ)
    aliases = {"x": 1, "y": 2, "z": 3}
    dec.handle("spBv1.0/g/DBIRTH/n/d", sparkplug.birth(XYZ, aliases))
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    [(_, first, _)] = dec.handle("spBv1.0/g/DDATA/n/d", sparkplug.encode_samples(
        x, XYZ, aliases=aliases))
    state = dec._devices[("g", "n", "d")]
    assert state.template is not None and np.array_equal(first, x)
    [(_, again, _)] = dec.handle("spBv1.0/g/DDATA/n/d", sparkplug.encode_samples(
        x + 1, XYZ, aliases=aliases))  # read by the template
    assert np.array_equal(again, x + 1)
    # The rebirth swaps x and z: the same bytes now mean other channels.
    dec.handle("spBv1.0/g/DBIRTH/n/d", sparkplug.birth(XYZ, {"x": 3, "y": 2, "z": 1}))
    assert dec._devices[("g", "n", "d")].template is None
    [(_, swapped, _)] = dec.handle("spBv1.0/g/DDATA/n/d", sparkplug.encode_samples(
        x, XYZ, aliases=aliases))
    assert np.array_equal(swapped, x[:, ::-1])
    monkeypatch.setattr(sparkplug, "MAX_TEMPLATE_BYTES", 9 * 3 * 4 - 1)  # 4 samples: 108 B
    dec.handle("spBv1.0/g/DBIRTH/n/d", sparkplug.birth(XYZ, aliases))
    [(_, big, _)] = dec.handle("spBv1.0/g/DDATA/n/d", sparkplug.encode_samples(
        x, XYZ, aliases=aliases))
    assert np.array_equal(big, x) and dec._devices[("g", "n", "d")].template is None


# ---------------------------------------------------------------- end to end, mosquitto

def samples() -> np.ndarray:
    """24 samples at 100 Hz whose windows go low -> high -> mid (float32-exact values)."""
    x = np.concatenate([np.full((8, 3), 0.125), np.full((8, 3), 2.0), np.full((8, 3), 1.0)])
    return x.astype(np.float32)


def payloads(fmt: str, x: np.ndarray) -> tuple[str, list[bytes]]:
    """The same samples as messages of 4 samples each, in ``fmt``; (topic, payloads)."""
    out = []
    for k in range(0, len(x), 4):
        part, t0 = x[k:k + 4], T0 + k * 0.01
        ts = [round(t0 + 0.01 * i, 6) for i in range(len(part))]
        if fmt == "json":
            out.append(json.dumps({"samples": part.tolist(), "ts": ts}).encode())
        elif fmt == "cbor":
            out.append(cbor2.dumps({"samples": part.tolist(), "ts": ts}))
        elif fmt == "binary":
            out.append(encode_block(part, start=t0, period=0.01))
        else:
            out.append(sparkplug.encode_samples(part, XYZ, start_ms=round(t0 * 1000),
                                                period_ms=10, seq=k // 4 + 1))
    if fmt == "sparkplug":
        return "spBv1.0/plant/DDATA/gw1/pump", out
    return "sensors/pump/data", out


def publish(client, topic: str, messages, **kwargs) -> None:
    for info in [client.publish(topic, m, qos=1, **kwargs) for m in messages]:
        info.wait_for_publish(5)


@pytest.mark.parametrize("fmt", ["json", "binary", "cbor", "sparkplug"])
def test_each_format_classifies_exactly_like_json(broker, model, fmt):
    x = samples()
    starts = range(0, len(x) - 7, 4)
    labels = offline_labels(model, np.stack([x[k:k + 8] for k in starts]))
    assert len(set(labels)) == 3  # the samples really steer the label
    want = [(label, T0 + 0.01 * k, T0 + 0.01 * (k + 7)) for label, k in zip(labels, starts,
                                                                              strict=True)]
    topic, messages = payloads(fmt, x)
    with running(broker, model, payload=fmt) as daemon, Collector(broker, OUT) as out:
        if fmt == "sparkplug":
            publish(out.client, "spBv1.0/plant/NBIRTH/gw1", [sparkplug.encode([], seq=0)])
        publish(out.client, topic, messages)
        docs = classifications(out, len(want))
        assert daemon.stats.snapshot()["rejected_total"] == 0
    got = [(d["label"], d["window_start"], d["window_end"]) for d in docs]
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1:] for g in got], [w[1:] for w in want], atol=1e-5)
    assert {d["device"] for d in docs} == {"pump"}


def test_cbor_and_blocks_by_content_type_beside_json(broker, model):
    """Under MQTT 5, one json daemon reads CBOR (by content type) and blocks (by magic)."""
    x = np.full((8, 3), 2.0, dtype=np.float32)
    props = mqtt.Properties(mqtt.PacketTypes.PUBLISH)
    props.ContentType = "application/cbor"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        with running(broker, model), Collector(broker, OUT) as out:
            publish(client, "sensors/a/data", [cbor2.dumps({"samples": x.tolist()})],
                    properties=props)
            publish(client, "sensors/b/data", [encode_block(x)])
            docs = classifications(out, 2)
    finally:
        client.disconnect()
        client.loop_stop()
    assert sorted((d["device"], d["label"]) for d in docs) == [("a", "high"), ("b", "high")]


def test_sparkplug_rebirth_and_sequence_gap_restart_the_window(broker, model):
    aliases = {"x": 1, "y": 2, "z": 3}
    data, birth = "spBv1.0/plant/DDATA/gw1/pump", "spBv1.0/plant/DBIRTH/gw1/pump"

    def block(k0, n, seq):  # n samples from sample k0, by alias, with ms timestamps
        return sparkplug.encode_samples(np.full((n, 3), 2.0), XYZ, aliases=aliases,
                                        start_ms=1_000_000 + 10 * k0, period_ms=10, seq=seq)

    with running(broker, model, payload="sparkplug") as daemon, \
            Collector(broker, OUT) as out:
        publish(out.client, birth, [sparkplug.birth(XYZ, aliases, seq=0)])
        publish(out.client, data, [block(0, 6, 1)])
        publish(out.client, data, [block(6, 6, 3)])  # seq 2 lost: restart, 6 < window 8
        publish(out.client, birth, [sparkplug.birth(XYZ, aliases, seq=4)])  # rebirth
        publish(out.client, data, [block(12, 6, 5), block(18, 2, 6)])  # 8 samples: a window
        [doc] = classifications(out, 1)
        wait_for(lambda: daemon.runner.restarts == 3, what="birth, gap and rebirth")
        publish(out.client, data, [b"\x0a\xff garbage", block(20, 1, 7)])
        wait_for(lambda: daemon.stats.snapshot()["rejected"] == {"invalid_sparkplug": 1},
                 what="the garbage counted")
    # Only the samples after the rebirth make the window: 12..19, not 0..11.
    assert doc["label"] == "high" and doc["window_start"] == pytest.approx(1000.12)
    assert doc["window_end"] == pytest.approx(1000.19)
    assert daemon.stats.gaps == 0  # restarts come from Sparkplug, not from ts gaps


def test_example_block_publisher_is_read_by_the_daemon(broker, tmp_path):
    """deploy/examples/block_publisher.py (the MicroPython node, run by CPython) end to end."""
    import subprocess
    import sys

    from tests.daemon_helpers import ROOT

    model = mean_model(tmp_path / "model.onnx", window=100, hop=100, sample_rate_hz=1000.0)
    with running(broker, model, payload="binary") as daemon, Collector(broker, OUT) as out:
        subprocess.run([sys.executable, str(ROOT / "deploy/examples/block_publisher.py"),
                        "--broker", broker.host, "--port", str(broker.port), "--blocks", "3"],
                       check=True, timeout=30)
        docs = classifications(out, 3)
        assert daemon.stats.snapshot()["rejected"] == {}
    # x, y swing around 0 and z is 1 g (9.8 m/s^2 after the scale): a mean of about 3.3.
    assert [d["device"] for d in docs] == ["esp32-1"] * 3
    assert {d["label"] for d in docs} == {"high"}
    assert docs[1]["window_start"] - docs[0]["window_start"] == pytest.approx(0.1, abs=1e-5)


def test_config_payload_extras_and_sparkplug_topics(tmp_path, monkeypatch):
    from edge.config import ConfigError, load_config

    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")

    def load(**cli):
        return load_config(cli={"model": str(model), **cli}, env={})

    assert load(payload="sparkplug").input_topic == sparkplug.DEFAULT_TOPIC
    assert load(payload="sparkplug", input_topic="spBv1.0/plant/NDATA/{device}").input_topic \
        == "spBv1.0/plant/NDATA/{device}"
    with pytest.raises(ConfigError, match="input_topic .*spBv1.0/{group}/DDATA"):
        load(payload="sparkplug", input_topic="sensors/{device}/#")
    with pytest.raises(ConfigError, match="payload .*must be one of json, binary, cbor"):
        load(payload="xml")
    monkeypatch.setitem(__import__("sys").modules, "cbor2", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'sigmoid-edge\[cbor\]'"):
        load(payload="cbor")
