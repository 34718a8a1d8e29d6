"""Capture directories for tests and benchmarks, made with the daemon's and collector's code.

Each window goes through :meth:`edge.capture.Capture.payload` (the JSON the daemon publishes),
:func:`trainer.captures.parse_capture` and :meth:`trainer.captures.CaptureStore.add` (what
``sigmoid-train collect`` does with it), without a broker in between.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.capture import Capture
from trainer.captures import CaptureStore, parse_capture

MODEL = {"name": "test", "version": "1", "sha256": "ab" * 32}


def store_windows(root: Path, windows: np.ndarray, probs: np.ndarray, labels, channels, *,
                  reasons=None, device: str = "dev1", node: str = "node1",
                  sample_rate_hz: float | None = 100.0, model: dict = MODEL) -> list[str]:
    """Store ``windows`` [N, W, C] with the model's ``probs`` [N, classes]; returns the ids."""
    capture = Capture("all", f"sigmoid-edge/{node}/capture/{{device}}", node)
    store = CaptureStore(root)
    ids = []
    period = 1.0 / sample_rate_hz if sample_rate_hz else 1.0
    for i, (x, p) in enumerate(zip(windows, probs, strict=True)):
        start = 1_700_000_000.0 + i * len(x) * period
        payload = capture.payload(
            device=device, window=np.ascontiguousarray(x, np.float32), start=start,
            end=start + (len(x) - 1) * period, labels=list(labels), channels=list(channels),
            probs=np.asarray(p, np.float32), reason=reasons[i] if reasons else "uncertain",
            model=model, sample_rate_hz=sample_rate_hz)
        doc = parse_capture(node, payload)
        store.add(doc)
        ids.append(doc["capture_id"])
    return ids
