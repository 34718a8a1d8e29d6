"""Bytes -> samples for one device.

Accepted payloads (``C`` = the model's channels, in metadata order):

- a JSON object keyed by channel name, ``{"x": 0.1, "y": 0.2, "z": 9.8, "ts": 1700000000.5}``:
  one sample; unknown keys are ignored; ``ts`` (seconds) is optional. With a channel
  mapping (``[channels] x = "ENERGY.Power"``), values are read from that dotted path, so
  Zigbee2MQTT (flat) and Tasmota (nested) messages work unchanged;
- a JSON array in channel order, ``[0.1, 0.2, 9.8]``: always exactly one sample;
- a batch ``{"samples": [[...], ...], "ts": ...}`` (``ts`` is the first sample's time or
  one time per sample) or a list of objects ``[{"x": ...}, {"x": ...}]``;
- a plain number, for one-channel models.

Every rejection raises :class:`Rejected` with a short ``reason`` (a stats key, see
:data:`REASONS`) and a human-readable ``detail``.
"""

from __future__ import annotations

import json
import math

import numpy as np

try:  # a core dependency; the standard library still works where it cannot be installed
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the install
    _fast_loads = None

F32_MAX = float(np.finfo(np.float32).max)

REASONS = {
    "too_large": "payload is larger than max_payload_bytes",
    "too_deep": "JSON nesting is deeper than max_depth",
    "invalid_json": "payload is not valid UTF-8 JSON",
    "bad_type": "payload is not an object, array or number",
    "empty": "payload has no samples",
    "wrong_width": "sample does not have one value per model channel",
    "missing_channel": "object lacks a channel the model needs",
    "not_a_number": "a channel value is not a number",
    "not_finite": "a channel value is NaN or infinite",
    "out_of_range": "a channel value does not fit in float32",
    "bad_ts": "ts is not a finite number (seconds) or a list of them",
    "bad_device": "device name is empty, longer than 128 characters, or has '+', '#', '/', "
                  "or a control, format, separator, private-use, unassigned or "
                  "default-ignorable character",
    "bad_block": "a binary sample block with a bad header or length (docs/payloads.md)",
    "invalid_cbor": "payload is not valid CBOR",
    "invalid_sparkplug": "payload is not a Sparkplug B protobuf, or its topic is not spBv1.0/...",
    "unknown_alias": "a Sparkplug metric alias no NBIRTH/DBIRTH of the device defined",
    "unsupported_format": "the MQTT 5 content type names a format this install cannot read",
    "internal_error": "an unexpected error while handling the message (a bug: please report)",
}


class Rejected(Exception):
    """A payload the daemon will not use; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PayloadParser:
    """Parse MQTT payloads into samples of one model's channels.

    Parameters
    ----------
    channels : sequence of str
        The model's channel names, in order.
    paths : mapping of str to str, optional
        Channel name -> dotted JSON path (``"ENERGY.Power"``); channels not listed are read
        from the key of their own name.
    max_bytes : int
        Larger payloads are rejected unread.
    max_depth : int
        Deeper JSON nesting is rejected.
    fast_json : bool, optional
        Parse with ``orjson`` when it is installed (the default). Whatever it refuses is
        parsed again with the standard library, so the reasons are the same either way
        (``NaN`` is ``not_finite``, not ``invalid_json``).

    Notes
    -----
    :meth:`parse` returns ``(values, ts)``. For one sample ``values`` is a list of ``C``
    numbers and ``ts`` a float or None; for a batch ``values`` is a float32 array
    ``[n, C]`` and ``ts`` is None, a float (time of the first sample) or a float64 array
    ``[n]``. Keeping the one-sample case as a plain list is what keeps the network thread
    fast: no numpy call per message.
    """

    def __init__(self, channels, paths=None, *, max_bytes: int = 256 * 1024,
                 max_depth: int = 8, fast_json: bool | None = None):
        self.channels = tuple(channels)
        use_fast = _fast_loads is not None if fast_json is None else fast_json
        if use_fast and _fast_loads is None:
            raise ValueError("fast_json needs orjson: pip install orjson")
        self._loads = _fast_loads if use_fast else _std_loads
        paths = dict(paths or {})
        unknown = sorted(set(paths) - set(self.channels))
        if unknown:
            raise ValueError(
                f"channel mapping names channels the model does not have: {unknown}; "
                f"the model's channels are {list(self.channels)}"
            )
        self.paths = tuple(tuple(paths.get(c, c).split(".")) for c in self.channels)
        self.flat_keys = (
            tuple(p[0] for p in self.paths) if all(len(p) == 1 for p in self.paths) else None
        )
        self.width = len(self.channels)
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self._maybe_bool = False

    def parse(self, payload: bytes):
        """Parse one payload; see the class notes for what comes back.

        Raises
        ------
        Rejected
            With the reason and what was wrong.
        """
        if len(payload) > self.max_bytes:
            raise Rejected("too_large", f"{len(payload)} bytes > max_payload_bytes "
                                        f"{self.max_bytes}")
        if _too_deep(payload, self.max_depth):
            depth = _bracket_depth(payload)  # the same verdict, unless brackets are unpaired
            if depth > self.max_depth:
                raise Rejected("too_deep", f"nesting depth {depth} > max_depth {self.max_depth}")
        self._maybe_bool = b"true" in payload or b"false" in payload
        try:
            doc = self._loads(payload)
        except Exception:  # orjson refuses NaN, 1e400, deep nesting: ask the standard parser
            doc = _std_loads(payload)
        return self.parse_document(doc)

    def parse_document(self, doc):
        """Samples from an already decoded document (JSON, or CBOR with the same shapes).

        Raises
        ------
        Rejected
            As :meth:`parse`.
        """
        kind = type(doc)
        if kind is dict:
            if "samples" in doc:
                return self._batch(doc["samples"], doc.get("ts"))
            return self._object(doc)
        if kind is list:
            if not doc:
                raise Rejected("empty", "empty JSON array")
            first = type(doc[0])
            if first is list:
                return self._batch(doc, None)
            if first is dict:
                return self._batch(doc, None)
            _check_row(doc, self.width)
            return doc, None
        if kind is float or kind is int:
            if self.width != 1:
                raise Rejected(
                    "wrong_width", f"a plain number is only accepted by one-channel models; "
                    f"this model has {self.width} channels {list(self.channels)}"
                )
            row = [doc]
            _check_row(row, 1)
            return row, None
        raise Rejected("bad_type", f"expected an object, array or number, got {kind.__name__}")

    def _values(self, obj: dict) -> list:
        keys = self.flat_keys
        if keys is not None:
            try:
                return [obj[k] for k in keys]
            except KeyError:
                missing = [c for c, k in zip(self.channels, keys, strict=True) if k not in obj]
                raise Rejected("missing_channel", f"no value for channel(s) {missing}") from None
        row = []
        for channel, path in zip(self.channels, self.paths, strict=True):
            node = obj
            for key in path:
                if type(node) is not dict or key not in node:
                    raise Rejected(
                        "missing_channel", f"no value at {'.'.join(path)!r} for channel {channel!r}"
                    )
                node = node[key]
            row.append(node)
        return row

    def _object(self, obj: dict):
        row = self._values(obj)
        _check_row(row, self.width)
        ts = obj.get("ts")
        if ts is not None:
            ts = _check_ts(ts)
        return row, ts

    def _batch(self, samples, ts):
        if type(samples) is not list:
            raise Rejected("bad_type", f"'samples' must be a list, got {type(samples).__name__}")
        if not samples:
            raise Rejected("empty", "no samples in the batch")
        if type(samples[0]) is dict:
            rows, times = [], []
            for obj in samples:
                if type(obj) is not dict:
                    raise Rejected("bad_type", "a list of objects has a non-object entry")
                row, t = self._object(obj)
                rows.append(row)
                times.append(t)
            values = np.asarray(rows, dtype=np.float32)
            if ts is None and all(t is not None for t in times):
                ts = times
            elif ts is None and any(t is not None for t in times):
                raise Rejected("bad_ts", "either every object of a batch has 'ts' or none does")
        else:
            values = _number_array(samples, self.width)
            # numpy turns true/false mixed with numbers into 1.0/0.0; a single row refuses
            # them (_check_row), so must a batch. Scan only when a boolean may be there.
            if self._maybe_bool and any(type(v) is bool for row in samples for v in row):
                raise Rejected("not_a_number", "a batch value is true/false, not a number")
        n = len(values)
        if ts is not None:
            if type(ts) is list:
                if len(ts) != n:
                    raise Rejected("bad_ts", f"{len(ts)} times for {n} samples")
                try:
                    times = np.asarray(ts, dtype=np.float64)
                except (TypeError, ValueError, OverflowError):
                    raise Rejected("bad_ts", "'ts' list has non-numbers or numbers too large "
                                             "for seconds") from None
                if times.ndim != 1 or not np.isfinite(times).all() or any(
                    type(t) is bool for t in ts
                ):
                    raise Rejected("bad_ts", "'ts' list must hold finite numbers (seconds)")
                ts = times
            else:
                ts = _check_ts(ts)
        return values, ts


def _std_loads(payload: bytes):
    """``json.loads`` with its failures turned into rejections."""
    try:
        return json.loads(payload)
    except RecursionError:
        raise Rejected("too_deep", "nesting too deep for the JSON parser") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise Rejected("invalid_json", str(e)[:120]) from None


def _check_row(row: list, width: int) -> None:
    """Check one sample: ``width`` finite numbers that fit in float32 (bools are not numbers)."""
    if len(row) != width:
        raise Rejected("wrong_width", f"sample has {len(row)} values, the model wants {width}")
    for v in row:
        t = type(v)
        if t is not float and t is not int:
            raise Rejected("not_a_number", f"value {v!r:.40} is a {t.__name__}, not a number")
    s = sum(row)
    if s - s == 0:  # false for NaN and +-inf; so every value is finite
        if min(row) >= -F32_MAX and max(row) <= F32_MAX:
            return
        raise Rejected("out_of_range", "a value does not fit in float32")
    if all(math.isfinite(v) for v in row):
        raise Rejected("out_of_range", "values too large (their sum overflows)")
    raise Rejected("not_finite", "NaN or infinite value")


def _number_array(rows: list, width: int) -> np.ndarray:
    """A batch of arrays -> float32 ``[n, width]``, strictly numeric and finite."""
    try:
        arr = np.array(rows)
    except (ValueError, TypeError, OverflowError):
        raise Rejected("wrong_width", "batch rows have different lengths or types") from None
    kind = arr.dtype.kind
    if kind not in "iuf":
        if kind == "O":
            raise Rejected(
                "wrong_width", "batch rows are ragged, mix types or hold huge integers"
            )
        raise Rejected("not_a_number", f"batch holds {arr.dtype} values, not numbers")
    if arr.ndim != 2 or arr.shape[1] != width:
        raise Rejected(
            "wrong_width", f"batch has shape {list(arr.shape)}, the model wants [n, {width}]"
        )
    # One reduction checks both: NaN fails every comparison and inf is above F32_MAX (any
    # int64 fits in float32's range).
    if kind == "f" and not np.abs(arr).max() <= F32_MAX:
        if not np.isfinite(arr).all():
            raise Rejected("not_finite", "NaN or infinite value in the batch")
        raise Rejected("out_of_range", "a value does not fit in float32")
    return arr.astype(np.float32)


def _check_ts(ts) -> float:
    t = type(ts)
    try:  # a huge JSON integer overflows float: that is a bad ts too, not a crash
        if (t is not float and t is not int) or not math.isfinite(ts):
            raise OverflowError
        return float(ts)
    except OverflowError:
        text = repr(ts) if t is not int else f"an integer of {len(str(abs(ts)))} digits"
        raise Rejected("bad_ts", f"ts must be a finite number of seconds, got {text:.40}") \
            from None


# Keeps only the brackets of a payload, as "[" and "]".
_OPEN_CLOSE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def _too_deep(payload: bytes, limit: int) -> bool:
    """Whether brackets (inside strings too) may nest deeper than ``limit``.

    Each ``replace`` removes the innermost pairs, one level of every branch: paired
    brackets are gone after ``depth`` passes, so False is certain; True can also mean
    unpaired brackets in a string (:func:`_bracket_depth` settles it). A batch of 100 rows
    needs three passes over 202 bytes, about 1 us; the numpy scan takes 11 us.
    """
    brackets = payload.translate(_OPEN_CLOSE, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return False
    for _ in range(limit):
        brackets = brackets.replace(b"[]", b"")
        if not brackets:
            return False
    return True


_BRACKET_STEP = np.zeros(256, dtype=np.int32)
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1


def _bracket_depth(payload: bytes) -> int:
    """Maximum nesting of ``[``/``{`` in raw bytes (brackets inside strings count too).

    Run only when :func:`_too_deep` says so; it is the slower, exact answer.
    """
    steps = _BRACKET_STEP[np.frombuffer(payload, dtype=np.uint8)]
    return int(np.cumsum(steps).max(initial=0))
