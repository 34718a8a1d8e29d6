"""Fuzz the binary, CBOR and Sparkplug B decoders: every input works or is a counted rejection.

Structured inputs mutate valid messages (a header field, a length, a metric), random bytes
cover the rest; one test feeds such messages to a running daemon and checks it counts each
one by reason and still classifies the valid stream after them.
"""

from __future__ import annotations

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import sparkplug
from edge.formats import Decoder
from edge.payload import REASONS, PayloadParser, Rejected
from edge.payload_binary import HEADER, encode_block
from tests.daemon_helpers import classifications, running, wait_for
from tests.models import mean_model
from tests.mqtt_helpers import Collector
from tests.test_fuzz_inputs import EXAMPLES, FUZZ, json_values

pytestmark = pytest.mark.fuzz
SOME = settings(FUZZ, max_examples=max(50, EXAMPLES // 5))  # FUZZ_EXAMPLES=100000: 20k each

XYZ = ("x", "y", "z")
PARSER = PayloadParser(XYZ, max_bytes=4096, max_depth=8)
DECODERS = {fmt: Decoder(fmt, PARSER) for fmt in ("json", "binary", "cbor")}


def check(result, width: int = 3) -> None:
    values, ts = result
    arr = np.asarray(values, dtype=np.float32).reshape(-1, width)
    assert np.isfinite(arr).all()
    if ts is not None:
        assert np.isfinite(np.asarray(ts, dtype=np.float64)).all()


def decode_or_reject(fn, *args) -> str | None:
    try:
        result = fn(*args)
    except Rejected as r:
        assert r.reason in REASONS and r.detail
        return r.reason
    if isinstance(result, list):  # Sparkplug events
        for device, values, ts in result:
            assert isinstance(device, str)
            if values is not None:
                check((values, ts))
    else:
        check(result)
    return None


def mutate(payload: bytes, data) -> bytes:
    """Flip, cut or overwrite a few bytes of a valid payload."""
    b = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["set", "cut", "grow"]))
        if op == "set" and b:
            b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del b[data.draw(st.integers(0, len(b))):]
        else:
            b += data.draw(st.binary(max_size=8))
    return bytes(b)


blocks = st.builds(
    lambda n, c, start, period, scale, seed: encode_block(
        np.random.default_rng(seed).normal(0, 1e3, (n, c)).astype(np.int16 if scale else
                                                                   np.float32),
        start=start, period=period, scale=[scale] * c if scale else None),
    st.integers(1, 5), st.integers(1, 4), st.none() | st.floats(), st.none() | st.floats(),
    st.none() | st.floats(width=32), st.integers(0, 9))


@SOME
@given(blocks, st.data(), st.sampled_from(["json", "binary", "cbor"]))
def test_blocks_mutated(block, data, fmt):
    decode_or_reject(DECODERS[fmt].parse, mutate(block, data))


@SOME
@given(st.binary(max_size=200), st.sampled_from(["binary", "cbor"]))
def test_random_bytes(payload, fmt):
    decode_or_reject(DECODERS[fmt].parse, payload)
    decode_or_reject(DECODERS[fmt].parse, HEADER.pack(b"\x89SGB", 1, 1, 0, 3, 1) + payload)


@SOME
@given(json_values)
def test_cbor_documents(value):
    try:
        payload = cbor2.dumps(value)
    except Exception:  # e.g. integers beyond what CBOR encodes
        return
    decode_or_reject(DECODERS["cbor"].parse, payload)


metric = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["x", "y", "z", "", "other"]), "alias": st.integers(0, 5),
    "timestamp": st.integers(0, 2**64 - 1), "datatype": st.integers(0, 25),
    "is_null": st.booleans()}).flatmap(lambda d: st.one_of(
        st.just(d), st.builds(lambda v: {**d, "float_value": v}, st.floats(width=32)),
        st.builds(lambda v: {**d, "double_value": v}, st.floats()),
        st.builds(lambda v: {**d, "int_value": v}, st.integers(0, 2**32 - 1)),
        st.builds(lambda v: {**d, "long_value": v}, st.integers(0, 2**64 - 1)),
        st.builds(lambda v: {**d, "boolean_value": v}, st.booleans()),
        st.builds(lambda v: {**d, "string_value": v}, st.text(max_size=4))))
TOPICS = ["spBv1.0/g/DDATA/n/d", "spBv1.0/g/DBIRTH/n/d", "spBv1.0/g/NBIRTH/n",
          "spBv1.0/g/NDATA/n", "spBv1.0/g/DDEATH/n/d", "spBv1.0/g/DDATA/n", "sensors/x",
          "spBv1.0/g/STATE/n/d"]


@SOME
@given(st.lists(st.tuples(st.sampled_from(TOPICS), st.lists(metric, max_size=8),
                          st.none() | st.integers(0, 255), st.none() | st.integers(0, 2**64 - 1),
                          st.booleans()), min_size=1, max_size=5), st.data())
def test_sparkplug_message_sequences(messages, data):
    dec = sparkplug.SparkplugDecoder(XYZ, max_bytes=4096)
    for topic, metrics, seq, ts, damage in messages:
        payload = sparkplug.encode(metrics, timestamp=ts, seq=seq)
        if damage:
            payload = mutate(payload, data)
        decode_or_reject(dec.handle, topic, payload)


def test_daemon_counts_fuzzed_messages_and_keeps_classifying(broker, tmp_path):
    """Bad blocks, CBOR and Sparkplug messages on a live daemon: counted, never fatal."""
    model = mean_model(tmp_path / "model.onnx")
    good = encode_block(np.full((8, 3), 2.0))
    bad = [good[:-3], b"\x89SGB" + bytes(12), good[:4] + b"\x09" + good[5:],
           encode_block(np.full((2, 3), np.nan)), encode_block(np.ones((2, 2)))]
    with running(broker, model, payload="binary") as daemon, \
            Collector(broker, "edge/+/classification") as out:
        for p in bad + [good]:
            out.client.publish("sensors/dev/data", p, qos=1).wait_for_publish(5)
        [doc] = classifications(out, 1)
        wait_for(lambda: daemon.stats.snapshot()["rejected_total"] == len(bad),
                 what="every bad block counted")
        assert daemon.stats.snapshot()["rejected"] == {"bad_block": 3, "not_finite": 1,
                                                       "wrong_width": 1}
    assert doc["label"] == "high"


def _key(ref) -> dict:
    """A metric's alias (an int) or name (a str)."""
    return {"name": ref} if isinstance(ref, str) else {"alias": ref}


def uniform_payload(n, value, stamp, dtype, seq, ts, aliases=(1, 2, 3)):
    """``n`` metrics of one layout (values ``value + i``), with aliases (ints) or names
    cycling through ``aliases``."""
    return sparkplug.encode(
        [{**_key(aliases[i % len(aliases)]),
          **({"timestamp": stamp + i} if stamp is not None else {}),
          **({"datatype": dtype} if dtype is not None else {}), value[0]: value[1] + i}
         for i in range(n)], seq=seq, timestamp=ts)


UNIFORM_ARGS = (
    st.integers(1, 12),
    st.tuples(st.just("float_value"), st.floats(width=32)) | st.tuples(
        st.just("double_value"), st.floats()),
    st.none() | st.integers(0, 2**62), st.none() | st.integers(0, 20),
    st.none() | st.integers(0, 255), st.none() | st.integers(0, 2**62))
uniform = st.builds(uniform_payload, *UNIFORM_ARGS, st.sampled_from(
    [(1, 2, 3), ("x", "y", "z"), ("x", "w", "z"), ("é", "y")]))
# Alias orders: the model's, another channel order, a metric that is no channel (4), one
# no birth defined (9), a channel missing.
ALIAS_ORDERS = st.sampled_from([(1, 2, 3), (3, 1, 2), (1, 2, 3, 4), (4, 2, 1, 3), (1, 9, 3),
                                (2, 1), ("x", "y", "z"), ("z", "x", "y"), ("x", "y", "z", "w"),
                                ("y", "x"), ("x", "q", "z")])


@SOME
@given(uniform, st.booleans(), st.data())
def test_sparkplug_fast_reader_agrees_with_protobuf(payload, damage, data):
    """Whatever the numpy reader accepts, protobuf parses to the same metrics."""
    if damage:
        payload = mutate(payload, data)
    u = sparkplug.uniform_metrics(payload)
    if u is None:
        return
    p = sparkplug.payload_class().FromString(payload)  # must not raise
    if u.names is not None:
        assert u.names == [m.name for m in p.metrics]
    else:
        assert not any(m.name for m in p.metrics)
    if u.aliases is not None:
        assert u.aliases.tolist() == [m.alias for m in p.metrics]
    else:
        assert not any(m.HasField("alias") for m in p.metrics)
    want = [getattr(m, m.WhichOneof("value")) for m in p.metrics]
    np.testing.assert_array_equal(u.values.astype(np.float64), np.array(want, dtype=np.float64))
    if u.times is not None:
        assert u.times.tolist() == [m.timestamp for m in p.metrics]
    else:
        assert not any(m.HasField("timestamp") for m in p.metrics)
    assert u.ts == (p.timestamp if p.HasField("timestamp") else None)
    assert u.seq == (p.seq if p.HasField("seq") else None)


def _events(dec, topic: str, payload: bytes):
    """``handle``'s events with arrays as lists, or the rejection reason."""
    try:
        events = dec.handle(topic, payload)
    except Rejected as r:
        return r.reason
    return [(device, None if values is None else np.asarray(values).tolist(),
             None if ts is None else np.asarray(ts, dtype=np.float64).tolist())
            for device, values, ts in events]


@SOME
@given(st.data())
def test_sparkplug_template_reader_agrees_with_protobuf(data):
    """A device's layout template (learnt from its last message) reads what protobuf reads.

    Two messages of one layout (value type, which fields; mostly the same metric count) that
    differ in aliases, values, timestamps and payload fields, the second one maybe damaged.
    """
    # Mostly a first message the fast reader takes (whole samples), so a template is made.
    n = data.draw(st.sampled_from([3, 6, 12]) | UNIFORM_ARGS[0])
    (kind, _), stamp, dtype = (data.draw(arg) for arg in UNIFORM_ARGS[1:4])
    value = st.floats(width=32) if kind == "float_value" else st.floats()
    orders = (st.sampled_from([(1, 2, 3), (3, 1, 2), ("x", "y", "z"), ("z", "x", "y")]),
              ALIAS_ORDERS)
    payloads = [uniform_payload(
        size, (kind, data.draw(value)), None if stamp is None else data.draw(st.integers(0, 2**62)),
        dtype, data.draw(UNIFORM_ARGS[4]), data.draw(UNIFORM_ARGS[5]), data.draw(order))
        for size, order in zip((n, data.draw(st.sampled_from([n, n, n + 1, n + 3]))), orders,
                               strict=True)]
    if data.draw(st.booleans()):
        payloads[1] = mutate(payloads[1], data)
    fast = sparkplug.SparkplugDecoder(XYZ)
    slow = sparkplug.SparkplugDecoder(XYZ)
    slow._fast_samples = lambda *_: None  # every message through protobuf objects
    birth = sparkplug.encode([{"name": name, "alias": alias, "datatype": 9, "float_value": 0}
                              for name, alias in (("x", 1), ("y", 2), ("z", 3), ("w", 4))])
    assert _events(fast, "spBv1.0/g/DBIRTH/n/d", birth) == \
        _events(slow, "spBv1.0/g/DBIRTH/n/d", birth)
    for payload in payloads:
        assert _events(fast, "spBv1.0/g/DDATA/n/d", payload) == \
            _events(slow, "spBv1.0/g/DDATA/n/d", payload)
    assert slow._devices[("g", "n", "d")].template is None
