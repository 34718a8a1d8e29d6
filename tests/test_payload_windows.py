"""Unit tests of the payload parser and the window buffers (pure logic, no broker)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.payload import REASONS, PayloadParser, Rejected, _bracket_depth, _too_deep
from edge.windows import WindowBuffers

XYZ = ("x", "y", "z")


@pytest.mark.parametrize(
    ("payload", "values", "ts"),
    [
        ({"x": 1, "y": 2.5, "z": -3, "rssi": -70}, [1, 2.5, -3], None),
        ({"z": 3, "y": 2, "x": 1, "ts": 17.5}, [1, 2, 3], 17.5),
        ([1, 2, 3], [1, 2, 3], None),
    ],
)
def test_one_sample(payload, values, ts):
    got, got_ts = PayloadParser(XYZ).parse(json.dumps(payload).encode())
    assert got == values and got_ts == ts


def test_batches_and_lists_of_objects():
    p = PayloadParser(XYZ)
    values, ts = p.parse(b'{"samples": [[1, 2, 3], [4, 5, 6]], "ts": 10}')
    np.testing.assert_array_equal(values, [[1, 2, 3], [4, 5, 6]])
    assert values.dtype == np.float32 and ts == 10.0
    values, ts = p.parse(b'[{"x": 1, "y": 2, "z": 3, "ts": 1}, {"x": 4, "y": 5, "z": 6, "ts": 2}]')
    np.testing.assert_array_equal(values, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(ts, [1.0, 2.0])
    values, ts = p.parse(b"[[1, 2, 3], [4, 5, 6], [7, 8, 9]]")
    assert values.shape == (3, 3) and ts is None


def test_a_flat_array_is_always_one_sample():
    with pytest.raises(Rejected) as e:
        PayloadParser(("level",)).parse(b"[1, 2, 3]")
    assert e.value.reason == "wrong_width"
    assert PayloadParser(("level",)).parse(b"4.5") == ([4.5], None)


def test_nested_paths_for_tasmota():
    p = PayloadParser(("power", "volts"), {"power": "ENERGY.Power", "volts": "ENERGY.Voltage"})
    doc = {"Time": "2024-01-01T00:00:00", "ENERGY": {"Power": 120, "Voltage": 231.5}}
    assert p.parse(json.dumps(doc).encode()) == ([120, 231.5], None)
    with pytest.raises(Rejected, match="ENERGY.Voltage"):
        p.parse(b'{"ENERGY": {"Power": 1}}')
    with pytest.raises(ValueError, match="does not have"):
        PayloadParser(XYZ, {"w": "a"})


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"x": 1, "y": 2, "z": NaN}', "not_finite"),
        (b'{"samples": [[1, 2, Infinity]]}', "not_finite"),
        (b'{"samples": [[1, 2, 1e39]]}', "out_of_range"),
        (b'{"samples": [["1", 2, 3]]}', "not_a_number"),
        (b'{"samples": [[1, 2, 3]], "ts": [1, 2]}', "bad_ts"),
        (b'{"samples": 5}', "bad_type"),
        (b'{"samples": []}', "empty"),
        (b'[{"x": 1, "y": 1, "z": 1, "ts": 1}, {"x": 1, "y": 1, "z": 1}]', "bad_ts"),
        (b'[[1, 2, 3], 4]', "wrong_width"),
        (b'{"x": 1, "y": 2, "z": 3, "ts": NaN}', "not_finite"),
        (b'{"x": 10000000000000000000000000000000000000000000, "y": 2, "z": 3}', "out_of_range"),
        (b'{"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}', "too_deep"),
    ],
)
@pytest.mark.parametrize("fast_json", [False, True], ids=["json", "orjson"])
def test_rejections_have_reasons(payload, reason, fast_json):
    if fast_json:
        pytest.importorskip("orjson")
    with pytest.raises(Rejected) as e:
        PayloadParser(XYZ, max_depth=8, fast_json=fast_json).parse(payload)
    # NaN ts is caught as a bad value of the sample's own check or as bad_ts
    assert e.value.reason == reason or (reason == "not_finite" and e.value.reason == "bad_ts")
    assert e.value.reason in REASONS and e.value.detail


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.sampled_from(["x", "y", "z", "ts", "samples", "a"]), children,
                      max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_parser_never_crashes_and_accepts_only_finite_float32(doc):
    p = PayloadParser(XYZ)
    try:
        raw = json.dumps(doc).encode()
    except ValueError:
        return
    try:
        values, ts = p.parse(raw)
    except Rejected as e:
        assert e.reason in REASONS
        return
    arr = np.asarray(values, dtype=np.float64).reshape(-1, 3)
    assert np.isfinite(arr).all() and np.abs(arr).max(initial=0) <= np.finfo(np.float32).max


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_parser_survives_arbitrary_bytes(raw):
    try:
        PayloadParser(XYZ, fast_json=False).parse(raw)
    except Rejected as e:
        assert e.reason in REASONS


def stream(n: int, channels: int = 2) -> np.ndarray:
    return np.arange(n * channels, dtype=np.float32).reshape(n, channels)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="[]{}a,", max_size=60), st.integers(1, 10))
def test_quick_depth_check_agrees_with_the_exact_scan(text, limit):
    # _too_deep may answer True for unpaired brackets (the exact scan then decides), but
    # must never miss a payload the exact scan finds too deep.
    raw = text.encode()
    if _bracket_depth(raw) > limit:
        assert _too_deep(raw, limit)
    if not _too_deep(raw, limit):
        assert _bracket_depth(raw) <= limit


def test_unpaired_brackets_in_strings_are_not_called_too_deep():
    parser = PayloadParser(XYZ, max_depth=3, fast_json=False)
    assert parser.parse(b'{"x": 1, "y": 2, "z": 3, "note": "]]]][[[["}') == ([1, 2, 3], None)
    with pytest.raises(Rejected, match="nesting depth 5 > max_depth 3"):
        parser.parse(b'{"x": 1, "y": 2, "z": 3, "deep": [[[[]]]]}')


@pytest.mark.parametrize("fast_json", [False, True], ids=["json", "orjson"])
def test_both_json_backends_agree(fast_json):
    if fast_json:
        pytest.importorskip("orjson")
    p = PayloadParser(XYZ, fast_json=fast_json)
    for raw in (b'{"x": 1, "y": 2, "z": 3, "ts": 5}', b"[1, 2, 3]", b"[1e400, 0, 0]",
                b'{"x": 100000000000000000000000000000000000000000000, "y": 0, "z": 0}'):
        try:
            got = p.parse(raw)
        except Rejected as e:
            got = e.reason
        try:
            want = PayloadParser(XYZ, fast_json=False).parse(raw)
        except Rejected as e:
            want = e.reason
        assert got == want, raw


@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
@pytest.mark.parametrize(("window", "hop"), [(8, 4), (8, 8), (5, 3), (4, 6)])
def test_windows_match_slicing_whatever_the_chunking(window, hop, chunk):
    data = stream(60)
    times = np.arange(60, dtype=np.float64)
    buf = WindowBuffers(window, 2, hop, max_devices=4)
    got, starts = [], []
    for lo in range(0, 60, chunk):
        buf.push("d", data[lo:lo + chunk], times[lo:lo + chunk])
        wins, devices, s, e = buf.take()
        got += list(wins)
        starts += list(s)
        np.testing.assert_array_equal(e - s, window - 1)
    expected = [data[i:i + window] for i in range(0, 60 - window + 1, hop)]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)
    assert starts == list(range(0, 60 - window + 1, hop))


def test_devices_are_independent_and_batched_together():
    buf = WindowBuffers(4, 2, 4, max_devices=10)
    buf.push("a", stream(4), np.arange(4.0))
    buf.push("b", stream(3) + 100, np.arange(3.0))
    buf.push("b", stream(1) + 200, np.arange(3.0, 4.0))
    wins, devices, _, _ = buf.take()
    assert devices == ["a", "b"] and wins.shape == (2, 4, 2)
    np.testing.assert_array_equal(wins[1][3], stream(1)[0] + 200)


def test_gap_restarts_the_window_and_lru_evicts():
    buf = WindowBuffers(4, 2, 4, max_devices=2, sample_rate_hz=10.0, gap_periods=5)
    buf.push("a", stream(3), np.array([0.0, 0.1, 0.2]), own_times=True)
    buf.push("a", stream(4) + 50, np.array([9.0, 9.1, 9.2, 9.3]), own_times=True)
    wins, _, starts, _ = buf.take()
    assert buf.gaps == 1 and starts.tolist() == [9.0]
    np.testing.assert_array_equal(wins[0], stream(4) + 50)
    # A gap inside one chunk keeps only what follows it.
    buf.push("c", stream(6), np.array([0, 0.1, 0.2, 5.0, 5.1, 5.2]), own_times=True)
    assert buf.take()[1] == [] and buf.gaps == 2
    buf.push("d", stream(1), np.array([0.0]))  # third device: "a" (least recent) goes
    assert "a" not in buf and "c" in buf and buf.evictions == 1


def test_period_is_learned_when_the_model_does_not_know_its_rate():
    buf = WindowBuffers(4, 1, 4, max_devices=2, gap_periods=5)
    t = np.arange(0, 0.6, 0.1)
    buf.push("a", stream(6, 1), t, own_times=True)
    buf.take()
    buf.push("a", stream(2, 1), np.array([30.0, 30.1]), own_times=True)
    assert buf.gaps == 1
