"""Captures: the windows worth labelling, sent back for the next model to learn from.

``sigmoid-edge run --capture uncertain|anomalies|all|none`` publishes, besides the
classification, the raw window of each selected classification at QoS 1 on
``sigmoid-edge/{node}/capture/{device}``. A window is selected when

- ``uncertain``: the model's top probability is below ``capture_below``;
- ``anomalies``: the model's ``anomaly_score`` is above its ``anomaly_threshold``;
- ``all``: always;
- and, whatever the mode, with probability ``capture_sample`` (a random sample keeps the
  collected data representative of what the device really sees, not only its hard cases).

A token bucket per device (``capture_rate`` per hour, the same as the burst) bounds what a
device can send; windows over it are counted as ``captures_limited``. Selection and the
JSON are made on the worker thread, after inference; with ``capture = none`` the runner
holds no :class:`Capture` at all, so the cost is nothing.

The uncertainty is measured on the model's own probabilities for that window, before any
smoothing: a capture is one window, and training sees one window at a time.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict

import numpy as np

try:
    import orjson
except ImportError:  # armv6l (Pi Zero, Pi 1): no orjson wheel, a core dependency elsewhere
    orjson = None

from edge.stats import RateLimit

MODES = ("none", "uncertain", "anomalies", "all")
DEFAULT_BELOW = 0.6
DEFAULT_RATE = 60


def capture_id(node: str, device: str, window_start: float, model_sha256: str) -> str:
    """The identity of one captured window: the same window from the same model is one capture.

    A message the broker delivers twice (QoS 1 after a reconnect) carries the same id, so a
    collector stores it once.
    """
    key = f"{node}\x00{device}\x00{window_start:.6f}\x00{model_sha256}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


class Capture:
    """Which classified windows to publish as captures, and their JSON.

    Parameters
    ----------
    mode : str
        One of :data:`MODES` except ``"none"``.
    topic : str
        The capture topic with the node filled in and ``{device}`` left.
    node : str
        Part of each capture's id.
    below : float
        ``uncertain``: top probability below which a window is captured.
    rate : int
        At most this many captures per device per hour (token bucket, burst ``rate``).
    sample : float
        Also capture this random fraction of all windows.
    max_devices : int
        Devices whose token bucket is kept (least recently used forgotten).
    seed : int, optional
        Seed of the random sample (tests).
    """

    def __init__(self, mode: str, topic: str, node: str, *, below: float = DEFAULT_BELOW,
                 rate: int = DEFAULT_RATE, sample: float = 0.0, max_devices: int = 1000,
                 seed: int | None = None):
        if mode not in MODES or mode == "none":
            raise ValueError(f"capture mode must be one of {', '.join(MODES[1:])}, got {mode!r}")
        self.mode = mode
        self.topic = topic
        self.node = node
        self.below = below
        self.rate = rate
        self.sample = sample
        self.max_devices = max_devices
        self._rng = np.random.default_rng(seed)
        self._buckets: OrderedDict[str, RateLimit] = OrderedDict()

    def select(self, probs: np.ndarray, flags: np.ndarray | None) -> tuple[np.ndarray, list]:
        """Indices of the windows a batch would capture (before the rate limit), and why.

        Parameters
        ----------
        probs : ndarray, shape (B, classes)
            The model's probabilities.
        flags : ndarray of bool, shape (B,), or None
            Anomalous windows (models with an anomaly score).
        """
        n = len(probs)
        if self.mode == "all":
            hit = np.ones(n, bool)
        elif self.mode == "uncertain":
            hit = probs.max(axis=1) < self.below
        else:
            hit = np.zeros(n, bool) if flags is None else np.asarray(flags, bool)
        sampled = self._rng.random(n) < self.sample if self.sample > 0 else np.zeros(n, bool)
        idx = np.flatnonzero(hit | sampled)
        reasons = [self.mode if hit[i] else "sample" for i in idx]
        return idx, reasons

    def allow(self, device: str) -> bool:
        """Take a token from ``device``'s bucket (``rate`` per hour)."""
        bucket = self._buckets.get(device)
        if bucket is None:
            bucket = self._buckets[device] = RateLimit(per_second=self.rate / 3600.0,
                                                       burst=self.rate)
            if len(self._buckets) > self.max_devices:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(device)
        return bucket.allow()

    def payload(self, *, device: str, window: np.ndarray, start: float, end: float,
                labels, channels, probs: np.ndarray, reason: str, model: dict,
                sample_rate_hz: float | None, score: float | None = None,
                anomaly: bool | None = None) -> bytes:
        """One capture as JSON bytes (the raw window as the model saw it, float32)."""
        best = int(probs.argmax())
        doc = {
            "capture_id": capture_id(self.node, device, start, model["sha256"]),
            "node": self.node,
            "device": device,
            "window_start": round(start, 6),
            "window_end": round(end, 6),
            "channels": list(channels),
            "sample_rate_hz": sample_rate_hz,
            "samples": window,
            "label": labels[best],
            "confidence": float(probs[best]),
            "probabilities": {k: float(p) for k, p in zip(labels, probs.tolist(), strict=True)},
            "reason": reason,
            "model": model,
            "captured_at": round(time.time(), 3),
        }
        if score is not None:
            doc["anomaly_score"] = float(score)
            doc["anomaly"] = bool(anomaly)
        if orjson is not None:
            return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        # The same document (float32 samples as the float64 that holds them: equal when read
        # back as float32), only not the shortest digits.
        doc["samples"] = np.asarray(window).tolist()
        return json.dumps(doc, separators=(",", ":")).encode()
