"""A journal of the samples in partial windows, so ``kill -9`` loses nothing.

With a persistent session (a fixed ``client_id`` and QoS > 0) the daemon acknowledges an
input message once the worker has taken it into a window buffer. A window of one-sample
messages is then acknowledged long before it is complete: a crash would lose the samples
of every partial window, and the broker would not send them again. So, after each cycle
and *before* that cycle's acknowledgements, the worker appends the samples it buffered to
this journal (written to the OS, which keeps it across a crash of the daemon; with
``journal_fsync`` on, also fsynced, so a power cut loses nothing either, at the price of
one fsync per cycle); at start the daemon replays the
journal into fresh buffers. Windows the replay completes are dropped: they were classified
before the crash (a cycle classifies, then journals, then acknowledges).

The file is bounded: when it grows beyond ``max_bytes`` it is rewritten (to a temporary
file, fsynced, renamed) as a snapshot of what the buffers hold now, at most
``2 * window + hop`` samples per device. A record torn by a crash fails its CRC and ends
the replay there; nothing after it was acknowledged.

Record: ``<I length><I crc32><B own_times><H channels><H name bytes>`` then the device name
(UTF-8), the times (float64 ``[k]``) and the values (float32 ``[k, channels]``).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_HEAD = struct.Struct("<II")
_META = struct.Struct("<BHH")


class Journal:
    """Append-only journal of buffered samples.

    Parameters
    ----------
    path : path
        The journal file (created with its directory).
    fsync : bool
        fsync after every cycle's records, before the acknowledgements (a power cut loses
        nothing); False leaves it to the OS (a daemon crash still loses nothing).
    max_bytes : int
        Rewrite the file as a snapshot of the buffers beyond this size.
    """

    def __init__(self, path, *, fsync: bool = False, max_bytes: int = 16 * 2**20):
        self.path = Path(path)
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._parts: list[bytes] = []
        self._file = None
        self.size = 0
        self.commits = 0
        self.compactions = 0

    # worker thread
    def record(self, device: str, values: np.ndarray, times: np.ndarray, own: bool) -> None:
        """Queue one device's samples of this cycle (written by :meth:`commit`)."""
        self._parts.append(_encode(device, values, times, own))

    def forget(self, device: str) -> None:
        """The device's buffer was dropped (a whole-window message behind a shared
        subscription): an empty record, replayed as :meth:`WindowBuffers.forget`."""
        self._parts.append(_encode(device, np.empty((0, 1), np.float32), np.empty(0), False))

    def commit(self, buffers=None) -> None:
        """Write (and fsync) this cycle's records; compact when the file is too large."""
        if not self._parts:
            return
        data = b"".join(self._parts)
        self._parts.clear()
        if buffers is not None and self.size + len(data) > self.max_bytes:
            self.snapshot(buffers)
            return
        f = self._open()
        f.write(data)
        f.flush()
        if self.fsync:
            os.fsync(f.fileno())
        self.size += len(data)
        self.commits += 1

    def snapshot(self, buffers) -> None:
        """Replace the file with the samples ``buffers`` hold now (atomic rename)."""
        self._parts.clear()
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            for device, values, times, own in buffers.pending():
                f.write(_encode(device, values, times, own))
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        self.close()
        os.replace(tmp, self.path)
        self.size = self.path.stat().st_size
        self.compactions += 1

    def replay(self, buffers) -> int:
        """Push the journal's samples into ``buffers``, dropping the windows they complete.

        Returns the samples the buffers hold afterwards (those of partial windows); the
        file is then compacted to them.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        for device, values, times, own in _decode(data):
            if not len(values):
                buffers.forget(device)
                continue
            if values.shape[1] != buffers.channels:
                continue  # written for a model with other channels
            buffers.push(device, values, times, own)
        buffers.take()  # classified before the crash
        self.snapshot(buffers)
        samples = sum(len(values) for _, values, _, _ in buffers.pending())
        if samples:
            log.info("journal %s: restored %d samples of partial windows (%d devices)",
                     self.path, samples, len(buffers))
        return samples

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self):
        if self._file is None:
            self._file = open(self.path, "ab")
            self.size = self._file.tell()
        return self._file


def _encode(device: str, values: np.ndarray, times: np.ndarray, own: bool) -> bytes:
    name = device.encode("utf-8", "surrogatepass")
    body = (_META.pack(1 if own else 0, values.shape[1], len(name)) + name
            + np.ascontiguousarray(times, "<f8").tobytes()
            + np.ascontiguousarray(values, "<f4").tobytes())
    return _HEAD.pack(len(body), zlib.crc32(body)) + body


def _decode(data: bytes):
    i, end = 0, len(data)
    while i + _HEAD.size <= end:
        length, crc = _HEAD.unpack_from(data, i)
        body = data[i + _HEAD.size:i + _HEAD.size + length]
        if len(body) != length or zlib.crc32(body) != crc:
            log.warning("journal: a torn record at byte %d ends the replay", i)
            return
        i += _HEAD.size + length
        own, channels, name_len = _META.unpack_from(body)
        j = _META.size
        device = body[j:j + name_len].decode("utf-8", "surrogatepass")
        j += name_len
        k = (length - j) // (8 + 4 * channels) if channels else 0
        times = np.frombuffer(body, "<f8", k, j).astype(np.float64)
        values = np.frombuffer(body, "<f4", k * channels, j + 8 * k).reshape(k, channels)
        yield device, values.astype(np.float32), times, bool(own)
