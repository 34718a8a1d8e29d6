"""Turn series and recordings into fixed-length windows ``[N, W, C]`` (float32).

Two sources, two rules:

- A ``.ts`` classification case is one window. Cases of unequal length are resampled
  to one fixed length by linear interpolation (first and last sample kept). On gesture
  data that measured clearly better than zero-padding or cutting, because a slow and a
  fast repetition of the same movement then line up.
- A continuous recording (CSV log) is cut into windows of ``window`` samples every
  ``hop`` samples, per device and only inside contiguous segments (a gap in the time
  stamps starts a new segment); a window's label is the most common label among its
  labelled samples (ties: alphabetically first; none labelled: the window is unlabelled).

Missing values (NaN) are filled by linear interpolation along time within each channel;
at the ends the nearest observed value is repeated; a channel with no value at all is 0.
"""

from __future__ import annotations

import logging

import numpy as np

from edge.tools.sensorfiles import resample_linear

log = logging.getLogger(__name__)

# A time step more than this many times the typical step starts a new segment.
GAP_FACTOR = 2.0


def fill_missing(x: np.ndarray) -> np.ndarray:
    """Fill NaNs in ``x`` ``[n, channels]`` by linear interpolation along axis 0."""
    if not np.isnan(x).any():
        return x
    x = np.array(x, dtype=np.float64)
    t = np.arange(x.shape[0])
    for c in range(x.shape[1]):  # loop over channels only; the samples are vectorised
        col = x[:, c]
        bad = np.isnan(col)
        if bad.all():
            col[:] = 0.0
        elif bad.any():
            col[bad] = np.interp(t[bad], t[~bad], col[~bad])
    return x


def cases_to_windows(series: list[np.ndarray], length: int) -> np.ndarray:
    """Fill missing values in each case and resample it to ``length``: ``[N, length, C]``."""
    out = np.empty((len(series), length, series[0].shape[1]), np.float32)
    for i, s in enumerate(series):  # one case at a time; cases differ in length
        out[i] = resample_linear(fill_missing(s), length)
    return out


def segments(ts: np.ndarray, gap_factor: float = GAP_FACTOR) -> list[slice]:
    """Split time-ordered time stamps into contiguous runs.

    A new segment starts where the step to the next sample is more than ``gap_factor``
    times the median step, or is not positive (a clock jump or a duplicate).
    """
    if ts.size < 2:
        return [slice(0, ts.size)]
    dt = np.diff(ts)
    positive = dt[dt > 0]
    typical = np.median(positive) if positive.size else 0.0
    breaks = np.flatnonzero((dt <= 0) | (dt > gap_factor * typical)) + 1
    edges = np.concatenate([[0], breaks, [ts.size]])
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def sliding_windows(x: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Windows of ``x`` ``[n, ...]`` starting every ``hop`` samples: ``[k, window, ...]``."""
    if x.shape[0] < window:
        return np.empty((0, window, *x.shape[1:]), x.dtype)
    view = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)[::hop]
    # sliding_window_view puts the window axis last; move it to axis 1.
    return np.moveaxis(view, -1, 1)


def majority(codes: np.ndarray, n_labels: int) -> np.ndarray:
    """Most common non-negative code per row of ``codes`` ``[k, window]``; -1 if none.

    Ties go to the smaller code.
    """
    counts = (codes[..., None] == np.arange(n_labels)).sum(axis=1)
    best = counts.argmax(axis=1)
    return np.where(counts.max(axis=1) > 0, best, -1)


def recording_windows(
    ts: np.ndarray,
    values: np.ndarray,
    *,
    window: int,
    hop: int,
    device: np.ndarray | None = None,
    label: np.ndarray | None = None,
    gap_factor: float = GAP_FACTOR,
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Cut a continuous recording into windows.

    Parameters
    ----------
    ts : ndarray, shape (n,)
        Time stamps in seconds.
    values : ndarray, shape (n, channels)
        Samples (NaN = missing).
    window, hop : int
        Samples per window and between window starts.
    device, label : ndarray of str, optional
        Per-row device and label ("" = unlabelled).
    gap_factor : float
        See :func:`segments`.

    Returns
    -------
    X : ndarray of float32, shape (k, window, channels)
    y : ndarray of str or None
        Majority label per window ("" when no sample of the window is labelled).
    info : dict
        ``segments``, ``devices``, ``sample_rate_hz`` (from the median time step) and
        ``window_devices`` (the device of each window; windows are in time order per device).
    """
    if window < 1 or hop < 1:
        raise ValueError(f"window and hop must be >= 1, got window={window}, hop={hop}")
    devices = np.zeros(ts.size, dtype="U1") if device is None else device
    names = list(dict.fromkeys(devices.tolist()))
    label_names = sorted(set(label.tolist()) - {""}) if label is not None else []
    codes = None
    if label is not None:
        lookup = {name: k for k, name in enumerate(label_names)}
        codes = np.array([lookup.get(v, -1) for v in label.tolist()])
    xs, ys, n_segments, steps, owners = [], [], 0, [], []
    for name in names:
        rows = np.flatnonzero(devices == name)
        rows = rows[np.argsort(ts[rows], kind="stable")]
        if rows.size > 1:
            steps.append(np.diff(ts[rows]))
        for seg in segments(ts[rows], gap_factor):
            n_segments += 1
            r = rows[seg]
            if r.size < window:
                continue
            xs.append(sliding_windows(fill_missing(values[r]), window, hop).astype(np.float32))
            owners.append(np.full(len(xs[-1]), name))
            if codes is not None:
                ys.append(majority(sliding_windows(codes[r], window, hop), len(label_names)))
    channels = values.shape[1]
    X = np.concatenate(xs) if xs else np.empty((0, window, channels), np.float32)
    y = None
    if codes is not None:
        k = np.concatenate(ys) if ys else np.empty(0, int)
        table = np.array(label_names + [""])  # code -1 indexes the trailing ""
        y = table[k]
    all_steps = np.concatenate(steps) if steps else np.empty(0)
    all_steps = all_steps[all_steps > 0]
    rate = float(f"{1.0 / np.median(all_steps):.6g}") if all_steps.size else None
    window_devices = np.concatenate(owners) if owners else np.empty(0, str)
    return X, y, {"segments": n_segments, "devices": len(names), "sample_rate_hz": rate,
                  "window_devices": window_devices}
