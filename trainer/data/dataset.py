"""One entry point for labelled windows: ``load_dataset(path)`` for ``.ts`` and ``.csv`` files."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.tools.sensorfiles import SensorFileError, read_csv, read_ts
from trainer.data.windowing import cases_to_windows, recording_windows

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    """Labelled windows and where they came from.

    Attributes
    ----------
    X : ndarray of float32, shape (n, window, channels)
    y : ndarray of str, shape (n,)
    channels : tuple of str
    window, hop : int
        Samples per window and between windows (``hop == window`` for ``.ts`` cases).
    sample_rate_hz : float or None
        Known for CSV logs (from the time stamps), unknown for ``.ts`` files.
    source : str
        The file.
    summary : dict
        JSON-able description: format, cases, lengths, resampling, class counts, ...
    groups : ndarray of str or None
        CSV logs: the device of each window (windows are in time order per device), for
        calibration on blocks in time per device; ``None`` for ``.ts`` cases.
    """

    X: np.ndarray
    y: np.ndarray
    channels: tuple[str, ...]
    window: int
    hop: int
    sample_rate_hz: float | None
    source: str
    summary: dict = field(default_factory=dict)
    groups: np.ndarray | None = None

    @property
    def labels(self) -> list[str]:
        return sorted(set(self.y.tolist()))


def load_dataset(
    path,
    *,
    window: int | None = None,
    hop: int | None = None,
    channels: list[str] | None = None,
    labelled: bool = True,
) -> Dataset:
    """Load labelled windows from a ``.ts`` archive or a CSV sensor log.

    Parameters
    ----------
    path : str or path-like
        A ``.ts`` file (each case one window) or a ``.csv`` sensor log (cut into windows).
    window : int, optional
        ``.ts``: resample every case to this length (default: the longest training case,
        which is the series length of equal-length files). CSV: required, samples per window.
    hop : int, optional
        Samples between window starts (CSV default ``window // 2``; ``.ts`` default
        ``window``: only the model metadata uses it there).
    channels : list of str, optional
        CSV: which channels, in this order (e.g. a model's). ``.ts`` channels are
        named ``dim_0``, ``dim_1``, ... unless given here.
    labelled : bool
        ``False`` for unlabelled data (anomaly models, clustering, pretraining): files
        without labels are accepted, every window is kept, and unlabelled windows have
        the label ``""``.

    Raises
    ------
    SensorFileError
        Malformed file, naming file and line.
    ValueError
        Missing ``window`` for a CSV log, or no labelled windows.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".ts":
        return _load_ts(path, window, hop, channels, labelled)
    if suffix == ".csv":
        return _load_csv(path, window, hop, channels, labelled)
    raise SensorFileError(
        path, None, f"unknown file type {suffix!r}: expected a UEA/UCR '.ts' file or a '.csv' log"
    )


def _load_ts(path: Path, window, hop, channels, labelled: bool = True) -> Dataset:
    data = read_ts(path)
    if data.labels is None and labelled:
        raise SensorFileError(path, None, "the file has no class labels (@classLabel false)")
    lengths = data.lengths
    n_ch = data.n_channels
    names = tuple(channels) if channels is not None else tuple(f"dim_{i}" for i in range(n_ch))
    if len(names) != n_ch:
        raise SensorFileError(path, None, f"the file has {n_ch} channel(s), expected {len(names)} "
                              f"({', '.join(names)})")
    length = int(window) if window else int(lengths.max())
    resampled = int((lengths != length).sum())
    if resampled:
        log.info("%s: resampled %d of %d cases to length %d (linear interpolation)",
                 path.name, resampled, len(lengths), length)
    missing = int(sum(int(np.isnan(s).sum()) for s in data.series))
    X = cases_to_windows(data.series, length)
    y = np.array(data.labels if data.labels is not None else [""] * len(data.series))
    summary = {
        "format": "ts",
        "file": path.name,
        "problem": data.problem_name,
        "cases": len(y),
        "channels": n_ch,
        "length_min": int(lengths.min()),
        "length_max": int(lengths.max()),
        "window": length,
        "resampled_cases": resampled,
        "missing_values_filled": missing,
        "class_counts": _counts(y),
    }
    return Dataset(X, y, names, length, int(hop or length), None, str(path), summary)


def _load_csv(path: Path, window, hop, channels, labelled: bool = True) -> Dataset:
    if not window:
        raise ValueError(f"{path}: a CSV sensor log needs --window N (samples per window)")
    rec = read_csv(path, channels)
    if rec.label is None and labelled:
        raise SensorFileError(path, 1, "no 'label' column: windows cannot be labelled")
    hop = int(hop or max(1, window // 2))
    X, y, info = recording_windows(rec.ts, rec.values, window=int(window), hop=hop,
                                   device=rec.device, label=rec.label)
    if y is None:
        y = np.full(len(X), "")
    keep = y != "" if labelled else np.ones(len(y), bool)
    dropped = int((~keep).sum())
    if dropped:
        log.info("%s: dropped %d windows without any labelled sample", path.name, dropped)
    X, y, groups = X[keep], y[keep], info["window_devices"][keep]
    if len(y) == 0:
        raise ValueError(f"{path}: no {'labelled ' if labelled else ''}window of {window} "
                         "samples; "
                         f"the log has {len(rec.ts)} rows in {info['segments']} segment(s)")
    summary = {
        "format": "csv",
        "file": path.name,
        "rows": int(len(rec.ts)),
        "devices": info["devices"],
        "segments": info["segments"],
        "windows": int(len(y)),
        "unlabelled_windows_dropped": dropped,
        "channels": len(rec.channels),
        "window": int(window),
        "hop": hop,
        "missing_values_filled": int(np.isnan(rec.values).sum()),
        "sample_rate_hz": info["sample_rate_hz"],
        "class_counts": _counts(y),
    }
    return Dataset(X, y, rec.channels, int(window), hop, info["sample_rate_hz"], str(path),
                   summary, groups)


def _counts(y: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(y, return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts, strict=True)}
