"""Binary sample blocks: many samples of one device in one message, read with one ``np.frombuffer``.

Layout, version 1 (every field little-endian; docs/payloads.md has the same table)::

    offset  size  field
    0       4     magic b"\\x89SGB" (0x89 0x53 0x47 0x42: never valid UTF-8, so never JSON)
    4       1     version, 1
    5       1     dtype: 1 = float32, 2 = int16 with a float32 scale per channel
    6       1     flags: bit 0 = a start time follows, bit 1 = a sample period follows;
                  the other bits are 0
    7       1     reserved, 0
    8       2     channels C (uint16, >= 1)
    10      2     reserved, 0
    12      4     samples N (uint32, >= 1)
    16      8     start time, float64 seconds since the epoch     (flag bit 0 only)
    ..      8     sample period, float64 seconds, > 0             (flag bit 1 only)
    ..      4*C   scale per channel, float32 (value = raw * scale) (dtype 2 only)
    ..      ...   N * C samples, row-major (sample 0 channel 0, sample 0 channel 1, ...)

The message is exactly that long. Times: with a start time and a period every sample has
its own time; with a start time only it is the first sample's time and the rest follow at
the model's sample rate (like JSON ``{"samples": ..., "ts": t0}``); without one the last
sample arrived when the message did.
"""

from __future__ import annotations

import struct
from math import isfinite

import numpy as np

from edge.payload import Rejected

MAGIC = b"\x89SGB"
VERSION = 1
FLOAT32, INT16 = 1, 2
HAS_START, HAS_PERIOD = 1, 2
CONTENT_TYPE = "application/vnd.sigmoid-edge.block"  # MQTT 5 content type of a block
HEADER = struct.Struct("<4sBBBxHxxI")
_F64 = struct.Struct("<d")
_DTYPES = {FLOAT32: np.dtype("<f4"), INT16: np.dtype("<i2")}


def encode_block(values, *, start: float | None = None, period: float | None = None,
                 scale=None) -> bytes:
    """Samples ``[n, C]`` -> one block (float32, or int16 when ``scale`` is given).

    Parameters
    ----------
    values : array-like, shape (n, C)
        Samples in time order. With ``scale`` they are the *raw* int16 readings.
    start : float, optional
        Time of the first sample, seconds since the epoch.
    period : float, optional
        Seconds between samples.
    scale : sequence of float, optional
        Per channel, what one raw unit is worth; makes an int16 block.
    """
    values = np.asarray(values)
    if values.ndim != 2 or not len(values) or not values.shape[1]:
        raise ValueError(f"values must be [n >= 1, C >= 1], got shape {list(values.shape)}")
    n, c = values.shape
    flags = (HAS_START if start is not None else 0) | (HAS_PERIOD if period is not None else 0)
    dtype = FLOAT32 if scale is None else INT16
    parts = [HEADER.pack(MAGIC, VERSION, dtype, flags, c, n)]
    if start is not None:
        parts.append(_F64.pack(start))
    if period is not None:
        parts.append(_F64.pack(period))
    if scale is not None:
        parts.append(np.asarray(scale, dtype="<f4").reshape(c).tobytes())
    parts.append(np.ascontiguousarray(values, dtype=_DTYPES[dtype]).tobytes())
    return b"".join(parts)


def block_channels(payload: bytes) -> int | None:
    """The channel count of a block (for tools that learn channels from the first message)."""
    if len(payload) >= HEADER.size and payload.startswith(MAGIC):
        return HEADER.unpack_from(payload)[4] or None
    return None


def parse_block(payload: bytes, width: int):
    """One block -> ``(values float32 [n, width], ts)``, ``ts`` as for JSON batches.

    Raises
    ------
    Rejected
        ``bad_block`` (header, length), ``wrong_width``, ``empty``, ``bad_ts``,
        ``not_finite`` or ``out_of_range``.
    """
    size = len(payload)
    if size < HEADER.size or not payload.startswith(MAGIC):
        raise Rejected("bad_block", f"not a sample block: {size} bytes without the "
                                    "magic b'\\x89SGB' header")
    _, version, dtype, flags, channels, n = HEADER.unpack_from(payload)
    if version != VERSION:
        raise Rejected("bad_block", f"block version {version}; this daemon reads version "
                                    f"{VERSION} (upgrade it or the sender)")
    item = _DTYPES.get(dtype)
    if item is None or flags > 3:
        raise Rejected("bad_block", f"unknown dtype {dtype} or flags {flags:#x} (dtype 1 = "
                                    "float32, 2 = int16; flags bits 0-1)")
    if channels != width:
        raise Rejected("wrong_width", f"block has {channels} channels, the model wants {width}")
    if not n:
        raise Rejected("empty", "block has no samples")
    offset = HEADER.size
    start = period = None
    if flags & HAS_START:
        start = _F64.unpack_from(payload, offset)[0] if size >= offset + 8 else None
        offset += 8
    if flags & HAS_PERIOD:
        period = _F64.unpack_from(payload, offset)[0] if size >= offset + 8 else None
        offset += 8
    scale_at = offset
    if dtype == INT16:
        offset += 4 * channels
    expected = offset + n * channels * item.itemsize
    if size != expected:
        raise Rejected("bad_block", f"block is {size} bytes; its header says {expected} "
                                    f"({n} samples x {channels} channels of {item.name})")
    values = np.frombuffer(payload, item, n * channels, offset).reshape(n, channels)
    if dtype == INT16:
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            values = values * np.frombuffer(payload, "<f4", channels, scale_at)
    # float32 values are in range when finite, and their float64 sum (one reduction, no
    # temporary array, no overflow) is finite exactly when they all are.
    if not isfinite(values.sum(dtype=np.float64)):
        if np.isnan(values).any():
            raise Rejected("not_finite", "NaN in the block (or in its scales)")
        raise Rejected("out_of_range", "infinite value in the block (or a scale overflows)")
    if start is None:
        return values, None
    if not (abs(start) < 1e12):  # also NaN
        raise Rejected("bad_ts", f"start time {start!r} is not seconds since the epoch")
    if period is None:
        return values, start
    if not 0 < period < 1e6:
        raise Rejected("bad_ts", f"sample period {period!r} must be positive seconds")
    return values, start + period * np.arange(n)
