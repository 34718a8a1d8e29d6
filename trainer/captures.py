"""A capture dataset directory: the windows the edge sent back, their index and their labels.

Layout (written by ``sigmoid-train collect``, labelled by ``sigmoid-train label``, read by
``sigmoid-train fit --add``)::

    DIR/windows/<id>.json   one capture each, exactly as the daemon published it
    DIR/index.jsonl         one line per capture: id, node, device, times, model's label...
    DIR/labels.json         {"labels": {id: label, or null when skipped}, "label_set": [...]}

A capture file is written (atomically) before its index line, and the index is checked
against the files when a store opens, so stopping ``collect`` at any moment loses nothing
and never stores a window twice. ``labels.json`` is rewritten atomically on every change.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.atomic import write_files
from edge.capture import capture_id
from trainer.data.dataset import _counts

log = logging.getLogger(__name__)

WINDOWS = "windows"
INDEX = "index.jsonl"
LABELS = "labels.json"
# The daemon's reasons for a capture; the labelling page shows these first.
HARD_REASONS = ("uncertain", "anomalies")
_ID = re.compile(r"^[0-9a-f]{8,64}$")


class CaptureError(ValueError):
    """A capture message or file is malformed; the message says what is wrong."""


def parse_capture(node: str, payload: bytes) -> dict:
    """Check one capture message and return it with its ``capture_id`` recomputed.

    The id is recomputed from ``node`` (the topic's), device, window start and model hash,
    so a window delivered twice is stored once and nothing in a message names a file.

    Raises
    ------
    CaptureError
        Not a JSON object, or samples/channels/device/window_start/model missing or wrong.
    """
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CaptureError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CaptureError("not a JSON object")
    channels, samples = doc.get("channels"), doc.get("samples")
    if not (isinstance(channels, list) and channels
            and all(isinstance(c, str) for c in channels)):
        raise CaptureError("'channels' must be a non-empty list of names")
    try:
        x = np.asarray(samples, dtype=np.float32)
    except (TypeError, ValueError):
        raise CaptureError("'samples' must be a list of rows of numbers") from None
    if x.ndim != 2 or x.shape[1] != len(channels) or len(x) < 1:
        raise CaptureError(f"'samples' must be [window, {len(channels)}] numbers, "
                           f"got shape {list(x.shape)}")
    device, start = doc.get("device"), doc.get("window_start")
    if not isinstance(device, str) or not device:
        raise CaptureError("'device' must be a non-empty string")
    if not isinstance(start, int | float) or isinstance(start, bool):
        raise CaptureError("'window_start' must be a number")
    model = doc.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("sha256"), str):
        raise CaptureError("'model' must be an object with the model's sha256")
    doc["capture_id"] = capture_id(node, device, float(start), model["sha256"])
    doc["node"] = node
    return doc


def index_entry(doc: dict) -> dict:
    """The line of ``index.jsonl`` for a capture (everything but the samples)."""
    model = doc.get("model") or {}
    return {"id": doc["capture_id"], "node": doc.get("node"), "device": doc["device"],
            "window_start": doc["window_start"], "window_end": doc.get("window_end"),
            "label": doc.get("label"), "confidence": doc.get("confidence"),
            "reason": doc.get("reason"), "anomaly": doc.get("anomaly"),
            "model": {k: model.get(k) for k in ("name", "version", "sha256")},
            "model_labels": list(doc.get("probabilities") or {}),
            "received": round(time.time(), 3)}


class CaptureStore:
    """One capture directory (see the module docstring); thread-safe.

    Parameters
    ----------
    root : path
        Created when missing.
    """

    def __init__(self, root):
        self.root = Path(root)
        self.windows = self.root / WINDOWS
        self.windows.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.entries: dict[str, dict] = {}
        self._index_size = -1
        self.reload()

    def reload(self) -> bool:
        """Re-read the index if it changed (another process may be collecting); repair it.

        Returns True when something new was read.
        """
        path = self.root / INDEX
        size = path.stat().st_size if path.exists() else 0
        if size == self._index_size:
            return False
        with self._lock:
            entries, clean = {}, True
            if path.exists():
                text = path.read_text(errors="replace")
                clean = text.endswith("\n") or not text
                for line in text.splitlines():
                    try:
                        entry = json.loads(line)
                        entries[entry["id"]] = entry
                    except (ValueError, KeyError, TypeError):
                        clean = False  # a line cut by a stop: dropped, restored from its file
            missing = [p for p in self.windows.glob("*.json") if p.stem not in entries]
            for p in missing:
                try:
                    doc = json.loads(p.read_bytes())
                    entries[p.stem] = {**index_entry(doc), "id": p.stem}
                except (ValueError, KeyError, TypeError):
                    log.warning("%s: not a capture, ignored", p)
            if missing or not clean:
                body = "".join(json.dumps(e) + "\n" for e in entries.values())
                write_files(self.root, {INDEX: body.encode()})
            self.entries = entries
            self._index_size = path.stat().st_size if path.exists() else 0
        return True

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, cid: str) -> bool:
        return cid in self.entries

    def add(self, doc: dict) -> bool:
        """Store a capture from :func:`parse_capture`; False if it was already stored."""
        cid = doc["capture_id"]
        with self._lock:
            if cid in self.entries:
                return False
            write_files(self.windows, {f"{cid}.json": json.dumps(doc).encode()})
            entry = index_entry(doc)
            with open(self.root / INDEX, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.entries[cid] = entry
            self._index_size = (self.root / INDEX).stat().st_size
        return True

    def window(self, cid: str) -> dict:
        """The stored capture ``cid`` (its samples as a list of rows)."""
        if not _ID.match(cid) or cid not in self.entries:
            raise KeyError(cid)
        return json.loads((self.windows / f"{cid}.json").read_bytes())


@dataclass
class Labels:
    """The labels given so far in a capture directory (``labels.json``), thread-safe.

    ``labels`` maps a capture id to its label, or to ``None`` when it was skipped;
    ``label_set`` is the list of labels the page offers (``--labels``, the models' labels
    and every label added on the page).
    """

    root: Path
    labels: dict[str, str | None] = field(default_factory=dict)
    label_set: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.root = Path(self.root)
        self._lock = threading.Lock()
        path = self.root / LABELS
        if path.exists():
            try:
                data = json.loads(path.read_text())
                self.labels = dict(data.get("labels", {}))
                self.label_set = list(data.get("label_set", []))
            except (ValueError, AttributeError) as exc:
                raise CaptureError(f"{path}: not a labels file ({exc}); move it away to "
                                   "start labelling afresh") from None

    def offer(self, names) -> None:
        """Add labels to the offered set (kept in order, no duplicates; not saved)."""
        for name in names:
            if name and name not in self.label_set:
                self.label_set.append(name)

    def set(self, cid: str, label: str | None) -> None:
        """Label (or skip, with ``None``) one capture and save at once."""
        with self._lock:
            self.labels[cid] = label
            if label is not None:
                self.offer([label])
            self._save()

    def _save(self) -> None:
        body = json.dumps({"labels": self.labels, "label_set": self.label_set}, indent=1)
        write_files(self.root, {LABELS: (body + "\n").encode()})


def queue_order(entries) -> list[dict]:
    """Captures in labelling order: the model's hard cases first, least confident first."""
    def key(e):
        conf = e.get("confidence")
        return (e.get("reason") not in HARD_REASONS,
                conf if isinstance(conf, int | float) else 1.0, e.get("window_start") or 0.0)
    return sorted(entries, key=key)


@dataclass
class Added:
    """The labelled captures of ``fit --add`` and what was left out, by reason."""

    X: np.ndarray
    y: np.ndarray
    summary: dict


def load_labelled(dirs, channels, window: int) -> Added:
    """The labelled windows of capture directories, as training windows.

    Parameters
    ----------
    dirs : list of path
    channels : sequence of str
        The training data's channels: a capture's channels are reordered to them.
    window : int
        The training window; captures of another length are left out (counted).

    Returns
    -------
    Added
        ``X`` float32 ``[n, window, channels]``, ``y`` the labels, and ``summary``: per
        directory and in total, ``used``, ``unlabelled``, ``skipped``, ``mismatched``
        (other window length or channels) and ``class_counts``.

    Raises
    ------
    FileNotFoundError
        If a directory has no ``index.jsonl`` (not made by ``sigmoid-train collect``).
    """
    xs, ys = [], []
    total = {"used": 0, "unlabelled": 0, "skipped": 0, "mismatched": 0}
    per_dir = []
    for d in dirs:
        d = Path(d)
        if not (d / INDEX).exists():
            raise FileNotFoundError(f"{d}: no {INDEX}; is it a directory from "
                                    "'sigmoid-train collect --out'?")
        store, labels = CaptureStore(d), Labels(d)
        counts = {"dir": str(d), "captures": len(store), "used": 0, "unlabelled": 0,
                  "skipped": 0, "mismatched": 0}
        for cid in store.entries:
            if cid not in labels.labels:
                counts["unlabelled"] += 1
                continue
            label = labels.labels[cid]
            if label is None:
                counts["skipped"] += 1
                continue
            doc = store.window(cid)
            x = np.asarray(doc["samples"], dtype=np.float32)
            names = doc["channels"]
            if len(x) != window or sorted(names) != sorted(channels):
                counts["mismatched"] += 1
                continue
            xs.append(x[:, [names.index(c) for c in channels]])
            ys.append(label)
            counts["used"] += 1
        if counts["mismatched"]:
            log.warning("%s: %d labelled captures left out: their window or channels differ "
                        "from the training data's (%d samples of %s)", d, counts["mismatched"],
                        window, ", ".join(channels))
        for k in total:
            total[k] += counts[k]
        per_dir.append(counts)
    y = np.array(ys, dtype=str)
    X = np.stack(xs) if xs else np.zeros((0, window, len(channels)), np.float32)
    summary = {**total, "class_counts": _counts(y), "dirs": per_dir}
    return Added(X, y, summary)


def add_to(train, dirs):
    """``train`` (a :class:`trainer.data.Dataset`) plus the labelled captures of ``dirs``.

    The summary gets a ``captures`` entry (what :func:`load_labelled` counted), which
    ``report.json`` carries under ``data.train.captures``.
    """
    from dataclasses import replace

    added = load_labelled(dirs, train.channels, train.window)
    X = np.concatenate([train.X, added.X]) if len(added.y) else train.X
    y = np.concatenate([train.y, added.y]) if len(added.y) else train.y
    summary = {**train.summary, "captures": added.summary,
               "windows_before_captures": int(len(train.y)), "windows": int(len(y)),
               "class_counts": _counts(y)}
    return replace(train, X=X, y=y, summary=summary)
