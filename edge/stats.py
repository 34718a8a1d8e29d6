"""Counters the daemon publishes on ``sigmoid-edge/{node}/stats``, and rate-limited errors.

Each counter has exactly one writer thread, so plain ``+=`` is safe without a lock: the
network thread counts ``messages_in``, ``rejected`` and ``drops``; the worker counts
``windows``, ``inferences``, ``classifications``, ``published`` and latencies. Readers
(the stats publisher) may see a value one increment old, which is fine for monitoring.
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
from bisect import bisect_left
from collections import Counter, deque

import numpy as np

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory of a process now (Linux ``/proc``; this one by default).

    Without ``/proc``, this process's peak from getrusage (another process's: 0).
    """
    try:
        with open(f"/proc/{pid or 'self'}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0 if pid else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# Histogram bounds (seconds). Inference on a Pi takes 0.1-50 ms per batch; a classification
# follows its last sample by a linger (2 ms) plus the batch, or by a backlog when overloaded.
INFERENCE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Histogram:
    """Cumulative observation counts in fixed buckets, with one writer thread and no lock.

    The worker observes once per batch (inference) or once per device per batch (latency);
    a reader (a Prometheus scrape) may see ``count`` one observation ahead of a bucket,
    which is fine for monitoring and costs the hot path nothing.

    Parameters
    ----------
    bounds : tuple of float
        Upper bounds (inclusive, Prometheus ``le``), increasing; ``+Inf`` is implied.
    """

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; last: +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def observe_many(self, values: list[float]) -> None:
        """Observe every value of a batch (one update of the counts; numpy when many)."""
        n = len(values)
        if n <= 32:
            counts, bounds = self.counts, self.bounds
            for value in values:
                counts[bisect_left(bounds, value)] += 1
        else:
            added = np.bincount(np.searchsorted(self.bounds, values, side="left"),
                                minlength=len(self.counts)).tolist()
            self.counts = [a + b for a, b in zip(self.counts, added, strict=True)]
        self.sum += math.fsum(values)
        self.count += n

    def cumulative(self) -> list[tuple[float, int]]:
        """``[(le, observations <= le), ..., (inf, count)]`` as Prometheus exposes them."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), list(self.counts), strict=True):
            total += n
            out.append((bound, total))
        return out


class Stats:
    """Counters, histograms and a latency reservoir.

    Attributes
    ----------
    messages_in : int
        Messages received on the input subscription.
    rejected : collections.Counter
        Rejected messages by reason (see :data:`edge.payload.REASONS`).
    drops : int
        Messages dropped because the queue to the worker was full (oldest first).
    output_drops : int
        Classifications not published because ``max_pending_outputs`` were still waiting
        for the broker (an outage, or a broker slower than the daemon).
    samples, windows, inferences, classifications, published : int
        Samples buffered, windows completed, onnxruntime calls, windows classified,
        classifications published (after ``on_change``).
    model_swaps, model_rejects : int
        Accepted and refused model reloads or pushes.
    labels : dict
        Windows classified, by label (``uncertain`` below ``min_confidence``).
    inference_seconds, latency_seconds : Histogram
        Seconds per model call, and from a window's last message arriving to its
        classification being handed to the MQTT client.
    window_rejects : collections.Counter
        Windows the model gave no usable output for, by reason (``inference_failed``:
        non-finite probabilities or anomaly score, or the runtime raised); the worker's own
        counter, apart from ``rejected`` (messages, counted on the network thread).
    input_lags : deque of float
        Seconds from a sample's own time (``ts``) to the worker taking it, newest sample per
        device and cycle: a backlog in the broker shows here, not in ``latencies``.
    captures, captures_limited, capture_drops : int
        Windows published on the capture topic (``--capture``), selected but over the
        device's ``capture_rate``, and selected but not published because
        ``max_pending_outputs`` messages were still waiting for the broker.
    anomalous_windows, anomaly_alarms : int
        Anomaly models: windows whose score is above the threshold, and alarms raised (a
        device's alarm turning on: its first anomalous window, or with
        ``anomaly_min_windows`` K the window completing K of the last N).
    """

    def __init__(self, latency_window: int = 4096):
        self.started = time.time()
        self.messages_in = 0
        self.rejected: Counter[str] = Counter()
        self.drops = 0
        self.output_drops = 0
        self.samples = 0
        self.windows = 0
        self.inferences = 0
        self.classifications = 0
        self.published = 0
        self.gaps = 0
        self.evictions = 0
        self.not_mine = 0  # --shard: messages of devices another daemon owns
        self.interleaved_devices = 0  # shared subscription: devices seen arriving with holes
        self.model_swaps = 0
        self.model_rejects = 0
        self.anomalous_windows = 0
        self.anomaly_alarms = 0
        self.batch_max = 0
        self.labels: dict[str, int] = {}
        self.inference_seconds = Histogram(INFERENCE_BUCKETS)
        self.latency_seconds = Histogram(LATENCY_BUCKETS)
        self.captures = 0
        self.captures_limited = 0
        self.capture_drops = 0
        # Seconds from a window's last message arriving to its classification being handed
        # to the MQTT client; the last `latency_window` of them.
        self.latencies: deque[float] = deque(maxlen=latency_window)
        self.window_rejects: Counter[str] = Counter()
        self.input_lags: deque[float] = deque(maxlen=latency_window)
        self.queue_depth = lambda: 0  # replaced by the daemon with the real queue's length
        self.pending_outputs = lambda: 0  # replaced by the daemon: QoS > 0 not yet acknowledged

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1

    def latency_ms(self, values=None) -> dict[str, float | None]:
        """p50 and p99 of ``values`` (the latencies by default) in milliseconds."""
        values = self.latencies if values is None else values
        if not values:
            return {"p50": None, "p99": None}
        p50, p99 = np.percentile(np.fromiter(values, float), [50, 99]) * 1000.0
        return {"p50": finite(round(float(p50), 3)), "p99": finite(round(float(p99), 3))}

    def snapshot(self) -> dict:
        """Everything as one JSON-ready dict (what goes on the stats topic)."""
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "messages_in": self.messages_in,
            "rejected": dict(self.rejected),
            "rejected_total": sum(self.rejected.values()),
            "samples": self.samples,
            "windows": self.windows,
            "inferences": self.inferences,
            "classifications": self.classifications,
            "published": self.published,
            "queue_depth": self.queue_depth(),
            "drops": self.drops,
            "pending_outputs": self.pending_outputs(),
            "output_drops": self.output_drops,
            "gaps": self.gaps,
            "evictions": self.evictions,
            "not_mine": self.not_mine,
            "interleaved_devices": self.interleaved_devices,
            "batch_max": self.batch_max,
            "model_swaps": self.model_swaps,
            "model_rejects": self.model_rejects,
            "labels": dict(self.labels),
            "captures": self.captures,
            "captures_limited": self.captures_limited,
            "capture_drops": self.capture_drops,
            "anomalous_windows": self.anomalous_windows,
            "anomaly_alarms": self.anomaly_alarms,
            "latency_ms": self.latency_ms(),
            "input_lag_ms": self.latency_ms(self.input_lags),
            "window_rejects": dict(self.window_rejects),
            "rss_mb": round(rss_bytes() / 2**20, 1),
        }


def finite(value):
    """``value`` if it is a finite float (or not a float), else None: strict JSON has no
    NaN or Infinity."""
    if type(value) is float and not math.isfinite(value):
        return None
    return value


def _strict(value):
    if type(value) is float:
        return finite(value)
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def to_json(doc) -> str:
    """``json.dumps`` for every message the daemon publishes: strict JSON, always.

    A non-finite float anywhere becomes ``null`` instead of the ``NaN``/``Infinity`` that
    strict parsers (browsers, Go, Home Assistant templates) refuse.
    """
    try:
        return json.dumps(doc, allow_nan=False)
    except ValueError:
        return json.dumps(_strict(doc), allow_nan=False)


class RateLimit:
    """Allow at most ``burst`` events, refilled at ``per_second``; count what was suppressed.

    Used for the ``errors`` topic and for log lines, so a flood of bad messages costs a
    counter increment each, not a publish or a log write each.
    """

    def __init__(self, per_second: float = 1.0, burst: int = 5):
        self.rate = per_second
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = time.monotonic()
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.suppressed += 1
        return False
