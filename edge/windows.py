"""Per-device window buffers: preallocated numpy rings, hop, gap reset and a device cap.

Each device has a buffer of ``2 * window + hop`` samples (and their times). Samples are
appended in chunks (all the samples a device sent since the worker last looked); every
time ``window`` samples are available from the next window start, a window is copied out
and the start moves on by ``hop``. Chunks are handled with slicing and
one gather (``np.take``), never a Python loop over samples.

A jump in the device's own timestamps (``ts``) of more than ``gap_periods`` sample periods
restarts its window, so a window never spans an outage. The period is the model's
``1 / sample_rate_hz`` when known, else a running estimate from the device's timestamps.
At most ``max_devices`` devices are kept; the least recently used is evicted.

Behind a shared subscription on a broker that does not keep a device on one member, each
daemon sees only some of a device's samples. With ``watch_interleaving`` a device whose
timestamps keep jumping (gaps, or every step longer than 1.5 of the model's sample periods)
is listed in :attr:`WindowBuffers.interleaved` once, so the daemon can say so.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


class _Device:
    __slots__ = ("buf", "times", "n", "start", "skip", "last_ts", "period", "odd")

    def __init__(self, capacity: int, channels: int):
        self.buf = np.empty((capacity, channels), dtype=np.float32)
        self.times = np.empty(capacity, dtype=np.float64)
        self.n = 0  # valid samples in buf
        self.start = 0  # where the next window starts
        self.skip = 0  # samples still to drop when hop > window
        self.last_ts = None  # the device's own last timestamp, for gap detection
        self.period = None  # running estimate of the sample period (s)
        self.odd = 0  # chunks whose timestamps jumped (watch_interleaving)

    def restart(self) -> None:
        self.n = self.start = self.skip = 0


class WindowBuffers:
    """Window buffers for every device of one model.

    Parameters
    ----------
    window : int
        Samples per window (the model's ``window``).
    channels : int
        Values per sample.
    hop : int
        Samples between consecutive window starts.
    max_devices : int
        Devices kept; the least recently used one is evicted beyond that.
    sample_rate_hz : float, optional
        The model's sample rate, for gap detection.
    gap_periods : float
        A timestamp jump larger than this many sample periods restarts the window.
    watch_interleaving : bool
        Look for devices whose samples arrive with holes (a non-sticky shared subscription).

    Attributes
    ----------
    gaps, evictions : int
        How many windows were restarted by a gap and how many devices were evicted.
    interleaved : list of str
        Devices found arriving with holes since the caller last emptied the list (each
        device once).
    """

    ODD_CHUNKS = 3  # chunks with jumps before a device counts as interleaved

    def __init__(self, window: int, channels: int, hop: int, *, max_devices: int = 1000,
                 sample_rate_hz: float | None = None, gap_periods: float = 5.0,
                 watch_interleaving: bool = False):
        if window < 1 or channels < 1 or hop < 1 or max_devices < 1:
            raise ValueError("window, channels, hop and max_devices must be positive")
        self.window = window
        self.channels = channels
        self.hop = hop
        self.max_devices = max_devices
        self.period = 1.0 / sample_rate_hz if sample_rate_hz else None
        self.gap_periods = gap_periods
        self.capacity = 2 * window + hop
        self._devices: OrderedDict[str, _Device] = OrderedDict()
        self._ready: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
        self._index_cache: dict[int, np.ndarray] = {}
        self.gaps = 0
        self.evictions = 0
        self.watch_interleaving = watch_interleaving
        self.interleaved: list[str] = []

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, device: str) -> bool:
        return device in self._devices

    def _device(self, name: str) -> _Device:
        dev = self._devices.get(name)
        if dev is None:
            if len(self._devices) >= self.max_devices:
                self._devices.popitem(last=False)
                self.evictions += 1
            dev = self._devices[name] = _Device(self.capacity, self.channels)
        else:
            self._devices.move_to_end(name)
        return dev

    def pending(self):
        """``(device, values, times, own_times)`` of the samples each device holds for its
        next window (copies), oldest device first: what :mod:`edge.journal` snapshots."""
        for name, dev in self._devices.items():
            if dev.n > dev.start:
                yield (name, dev.buf[dev.start:dev.n].copy(), dev.times[dev.start:dev.n].copy(),
                       dev.last_ts is not None)

    def forget(self, device: str) -> None:
        """Drop a device's buffer (its next sample starts a fresh window)."""
        self._devices.pop(device, None)

    def push(self, device: str, values: np.ndarray, times: np.ndarray,
             own_times: bool = False) -> int:
        """Append samples of one device; windows that become complete are kept for :meth:`take`.

        Parameters
        ----------
        device : str
            Device name.
        values : ndarray of float32, shape (k, channels)
            Samples in time order.
        times : ndarray of float64, shape (k,)
            Their times in seconds (for ``window_start``/``window_end``).
        own_times : bool
            True when ``times`` came from the device (``ts``): only then are gaps checked.

        Returns
        -------
        int
            Windows completed by this push.
        """
        dev = self._device(device)
        if own_times and len(times):
            values, times = self._cut_gaps(dev, values, times, device)
        k = len(values)
        if dev.skip:
            drop = min(dev.skip, k)
            values, times, dev.skip, k = values[drop:], times[drop:], dev.skip - drop, k - drop
        if k == 0:
            return 0
        W, hop = self.window, self.hop
        pending = dev.n - dev.start
        if pending + k <= self.capacity:
            if dev.n + k > self.capacity:  # compact: move the pending samples to the front
                dev.buf[:pending] = dev.buf[dev.start:dev.n]
                dev.times[:pending] = dev.times[dev.start:dev.n]
                dev.n, dev.start = pending, 0
            dev.buf[dev.n:dev.n + k] = values
            dev.times[dev.n:dev.n + k] = times
            dev.n += k
            data, tdata, base, end, temporary = dev.buf, dev.times, dev.start, dev.n, False
        else:  # a chunk larger than the buffer: work on a temporary concatenation
            data = np.concatenate([dev.buf[dev.start:dev.n], values])
            tdata = np.concatenate([dev.times[dev.start:dev.n], times])
            base, end, temporary = 0, len(data), True
        m = 0
        if end - base >= W:
            m = (end - base - W) // hop + 1
            if m == 1:
                wins = data[base:base + W][None].copy()
            else:  # one gather: 5x cheaper than sliding_window_view for a few windows
                wins = np.take(data[base:end], self._window_index(m), axis=0)
            starts = base + hop * np.arange(m)
            self._ready.append((device, wins, tdata[starts], tdata[starts + W - 1]))
        new_start = base + m * hop
        if new_start > end:  # hop > window: the next samples are skipped
            dev.skip, new_start = new_start - end, end
        if temporary:
            keep = end - new_start
            dev.buf[:keep] = data[new_start:end]
            dev.times[:keep] = tdata[new_start:end]
            dev.n, dev.start = keep, 0
        else:
            dev.start = new_start
        return m

    def _window_index(self, m: int) -> np.ndarray:
        """Row indices ``[m, window]`` of ``m`` windows a hop apart (memoised up to 64)."""
        index = self._index_cache.get(m)
        if index is None:
            index = self.hop * np.arange(m)[:, None] + np.arange(self.window)
            if m <= 64:
                self._index_cache[m] = index
        return index

    def _cut_gaps(self, dev: _Device, values: np.ndarray, times: np.ndarray, name: str):
        """Restart the window at the last gap in (last_ts, *times*); keep the samples after it."""
        steps = np.diff(times) if dev.last_ts is None else np.diff(times, prepend=dev.last_ts)
        period = self.period or dev.period
        ok = steps > 0
        if period is not None:
            limit = self.gap_periods * period
            jumps = np.flatnonzero(np.abs(steps) > limit)
            if self.watch_interleaving and dev.odd < self.ODD_CHUNKS and len(steps) and (
                    len(jumps) or self.period and steps.min() > 1.5 * self.period):
                dev.odd += 1
                if dev.odd == self.ODD_CHUNKS:
                    self.interleaved.append(name)
            if len(jumps):
                # steps[i] leads to times[i] (with prepend) or times[i + 1] (without)
                cut = int(jumps[-1]) + (0 if dev.last_ts is not None else 1)
                if dev.n > dev.start or cut:
                    self.gaps += 1
                dev.restart()
                values, times = values[cut:], times[cut:]
            ok &= np.abs(steps) <= limit
        if self.period is None and ok.any():  # learn the device's period from normal steps
            est = float(np.median(steps[ok]))
            dev.period = est if dev.period is None else 0.8 * dev.period + 0.2 * est
        if len(times):
            dev.last_ts = float(times[-1])
        return values, times

    def take(self):
        """Every window completed since the last call, as one batch.

        Returns
        -------
        windows : ndarray of float32, shape (B, window, channels)
        devices : list of str, length B
        starts, ends : ndarray of float64, shape (B,)
            Times of each window's first and last sample.
        """
        ready, self._ready = self._ready, []
        if not ready:
            return (np.empty((0, self.window, self.channels), np.float32), [],
                    np.empty(0), np.empty(0))
        devices = [name for name, wins, _, _ in ready for _ in range(len(wins))]
        if len(ready) == 1:
            _, wins, s, e = ready[0]
            return wins, devices, s, e
        return (np.concatenate([r[1] for r in ready]), devices,
                np.concatenate([r[2] for r in ready]), np.concatenate([r[3] for r in ready]))
