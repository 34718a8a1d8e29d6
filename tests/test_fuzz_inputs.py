"""Fuzz what the daemon and the loaders read from outside: payloads, config, sensor files.

No input may crash them: each either works or is refused with the module's own error type
and a message that says what was wrong. ``FUZZ_EXAMPLES`` sets the examples per test
(``make fuzz`` runs 100k; the default keeps the suite fast).
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge.config import FIELDS, ConfigError, load_config
from edge.payload import REASONS, PayloadParser, Rejected
from edge.tools.sensorfiles import SensorFileError, read_csv, read_ts

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
WORK = Path(tempfile.mkdtemp(prefix="sigmoid-edge-fuzz-"))
MODEL = WORK / "model.onnx"
MODEL.write_bytes(b"not parsed by load_config")  # validate() only checks it exists

pytestmark = pytest.mark.fuzz

# ----------------------------------------------------------------------------- payloads

F32_MAX = float(np.finfo(np.float32).max)
# Magnitudes anywhere up to float32's range (and a little past it), evenly by exponent: the
# values that overflow a model's arithmetic (1e19 squared) are in there.
magnitudes = st.builds(lambda m, e: m * 10.0 ** e, st.floats(-9.99, 9.99),
                       st.integers(-45, 38)).filter(math.isfinite)
numbers = st.one_of(st.integers(-10**40, 10**40), st.floats(allow_nan=True, allow_infinity=True),
                    st.floats(-F32_MAX, F32_MAX, width=32), magnitudes)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(
        st.sampled_from(["x", "y", "z", "ts", "samples", "ENERGY", "Power", "q"]) | st.text(
            max_size=4), inner, max_size=6),
    max_leaves=30)


def _dump(value) -> bytes:
    import json

    return json.dumps(value, allow_nan=True).encode()


PARSERS = [PayloadParser(("x", "y", "z"), max_bytes=4096, max_depth=8),
           PayloadParser(("level",)),
           PayloadParser(("p", "c"), {"p": "ENERGY.Power", "c": "ENERGY.Current"})]


def parse_or_reject(parser: PayloadParser, payload: bytes) -> None:
    try:
        values, ts = parser.parse(payload)
    except Rejected as r:
        assert r.reason in REASONS and r.detail
        return
    arr = np.asarray(values, dtype=np.float32)
    arr = arr.reshape(-1, parser.width) if arr.ndim == 1 else arr
    assert arr.shape[1] == parser.width and np.isfinite(arr).all()
    if ts is not None:
        assert np.isfinite(np.asarray(ts, dtype=np.float64)).all()


@FUZZ
@given(json_values, st.sampled_from(range(len(PARSERS))))
def test_payload_parser_structured(value, which):
    parse_or_reject(PARSERS[which], _dump(value))


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(range(len(PARSERS))))
def test_payload_parser_bytes(payload, which):
    parse_or_reject(PARSERS[which], payload)


# ------------------------------------------------------------- model outputs and devices

@functools.cache
def _square_runner():
    """One runner for every example (a session per example would take minutes)."""
    from edge.models import ModelSlot, load_model
    from edge.runner import Runner
    from edge.stats import Stats
    from tests.test_hostile import square_model_bytes

    published: list[str] = []
    runner = Runner(ModelSlot(load_model(square_model_bytes())),
                    lambda topic, payload, qos: published.append(payload), Stats())
    return runner, published


@pytest.mark.timeout(600)  # onnxruntime per example: ~20 s of CPU for 1000, more when busy
@FUZZ
@given(st.lists(st.lists(st.one_of(magnitudes.filter(lambda v: abs(v) <= F32_MAX),
                                   st.floats(-F32_MAX, F32_MAX, width=32)),
                         min_size=12, max_size=12), min_size=1, max_size=8))
def test_any_float32_window_is_classified_as_strict_json_or_counted(rows):
    """Windows of any float32 magnitude: every output is strict JSON, or a counted rejection."""
    pytest.importorskip("onnx", reason="the model is built with onnx (tests/test_hostile.py)")
    from edge.stats import Stats
    from tests.test_hostile import strict

    runner, published = _square_runner()
    runner.stats = Stats()
    published.clear()
    windows = np.array(rows, np.float32).reshape(-1, 4, 3)
    n = len(windows)
    runner._classify(windows, [f"d{i}" for i in range(n)], np.zeros(n), np.ones(n), {})
    docs = [strict(p.encode()) for p in published]
    assert len(docs) + runner.stats.window_rejects["inference_failed"] == n
    assert all(math.isfinite(d["anomaly_score"]) for d in docs)


# Every code point but surrogates (a topic is UTF-8, which cannot carry them).
any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=("Cs",))
_BAD_CATEGORIES = {"Cc", "Cf", "Co", "Cn", "Zl", "Zp"}


@FUZZ
@given(st.text(any_char, min_size=1, max_size=12))
def test_device_names_from_the_whole_unicode_range(name):
    import json
    import unicodedata

    from edge.config import _DEFAULT_IGNORABLE, check_device_name

    ok = check_device_name(name)
    bad = any(unicodedata.category(c) in _BAD_CATEGORIES or c in "+#/"
              or any(lo <= ord(c) <= hi for lo, hi in _DEFAULT_IGNORABLE) for c in name)
    assert ok is not bad
    if ok:  # what the daemon does with an accepted name
        assert json.loads(json.dumps(name)) == name and name.encode("utf-8")


# ----------------------------------------------------------------------------- config

_KEYS = sorted(FIELDS) + ["postprocess", "password", "bogus", "qso"]
toml_scalars = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(), st.booleans(),
                         st.text(max_size=12), st.sampled_from(
                             ["mqtt://h:1883", "mqtts://h", "5", "3.1.1", "sensors/{device}/#",
                              "edge/{device}/x", "a/+/{device}", "info", str(MODEL)]))
toml_values = st.one_of(toml_scalars, st.lists(toml_scalars, max_size=3),
                        st.dictionaries(st.text(min_size=1, max_size=6), toml_scalars,
                                        max_size=3))


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}"
                             for c in v) + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{_toml_value(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


def load_or_refuse(text: str, env: dict) -> None:
    path = WORK / "config.toml"
    path.write_text(text)
    try:
        cfg = load_config(cli={"model": str(MODEL)}, env=env, path=path)
    except ConfigError as e:
        assert len(str(e)) > 10
        return
    assert cfg.qos in (0, 1, 2) and cfg.node and cfg.model == str(MODEL)


@FUZZ
@given(st.dictionaries(st.sampled_from(_KEYS), toml_values, max_size=6))
def test_config_loader_structured(doc):
    text = "".join(f"{k} = {_toml_value(v)}\n" for k, v in doc.items() if k != "model")
    load_or_refuse(text, {})


@FUZZ
@given(st.text(max_size=200))
def test_config_loader_any_text(text):
    load_or_refuse(text, {})


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(FIELDS) + ["PASSWORD", "CONFIG"]),
                       st.text(max_size=16), max_size=4))
def test_config_from_environment(values):
    env = {"SIGMOID_EDGE_" + k.upper(): v for k, v in values.items()
           if k != "model" and "\x00" not in v}
    if env.get("SIGMOID_EDGE_CONFIG"):
        env["SIGMOID_EDGE_CONFIG"] = str(WORK / "missing.toml")
    load_or_refuse("", env)


# ----------------------------------------------------------------------------- sensor files

ts_lines = st.lists(st.one_of(
    st.sampled_from(["@problemName P", "@univariate true", "@univariate false",
                     "@dimensions 2", "@equalLength true", "@equalLength false",
                     "@seriesLength 3", "@classLabel true a b", "@classLabel false",
                     "@missing true", "@timestamps false", "@data", "# comment", "",
                     "1,2,3:a", "1,2:3,4:b", "?,1,2:a", "1,2,3", "1,,2:a", "1e400,2:a",
                     "nan,1:b", ":a", "1,2,3:c"]),
    st.text(max_size=20)), max_size=12)
csv_lines = st.lists(st.one_of(
    st.sampled_from(["ts,device,label,x,y", "ts,x,x", "x,y", "ts,x,y", "ts,,y", "ts,label",
                     "1,d1,a,0.1,0.2", "2,d1,,?,nan", "x,1,2", "1,2", '"1,2",3', "inf,1,2",
                     "1,2,3,4,5,6", ""]),
    st.text(max_size=20)), max_size=8)


def read_or_refuse(reader, suffix: str, data: bytes) -> None:
    path = WORK / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        reader(path)
    except SensorFileError as e:
        assert str(path) in str(e) and len(str(e)) > len(str(path)) + 5
        return


@FUZZ
@given(ts_lines)
def test_ts_loader_structured(lines):
    read_or_refuse(read_ts, ".ts", "\n".join(lines).encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.binary(max_size=200))
def test_ts_loader_bytes(data):
    read_or_refuse(read_ts, ".ts", b"@data\n" + data)


@FUZZ
@given(csv_lines)
def test_csv_loader_structured(lines):
    read_or_refuse(read_csv, ".csv", "\n".join(lines).encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.binary(max_size=200))
@example(b"\x80")  # found by this test: read_csv raised UnicodeDecodeError
def test_csv_loader_bytes(data):
    read_or_refuse(read_csv, ".csv", b"ts,x\n" + data)
