"""Synthetic machine-vibration data: labelled multichannel windows without any files.

A motor turning at about 5 Hz is watched by a 3-axis accelerometer sampled at 100 Hz.
Each class is a fault pattern a vibration engineer would recognise:

- ``normal``: a small once-per-revolution (1x) component and sensor noise;
- ``imbalance``: a strong 1x component, mostly radial (x and y);
- ``misalignment``: a strong 2x harmonic with a large axial (z) part;
- ``bearing_fault``: short high-frequency bursts at a defect rate of about 3.6x.

Speed, amplitude and phase vary from window to window, so the classes are learnable
but not trivial. Everything is seeded: the same arguments give the same data.
Used by the tests (which must not need ``../shared``), ``simulate --synthetic`` and the demo.
"""

from __future__ import annotations

import numpy as np

LABELS = ("normal", "imbalance", "misalignment", "bearing_fault")
CHANNELS = ("x", "y", "z")
SAMPLE_RATE_HZ = 100.0
ROTATION_HZ = 5.0


def signal(
    label: str,
    n_samples: int,
    rng: np.random.Generator,
    *,
    channels: int = 3,
    sample_rate_hz: float = SAMPLE_RATE_HZ,
    noise: float = 0.3,
) -> np.ndarray:
    """One continuous recording of ``label``, float32 ``[n_samples, channels]``."""
    if label not in LABELS:
        raise ValueError(f"unknown synthetic label {label!r}; choose one of {LABELS}")
    t = np.arange(n_samples) / sample_rate_hz
    f = ROTATION_HZ * rng.uniform(0.9, 1.1)
    phase = rng.uniform(0, 2 * np.pi, size=channels)
    gain = rng.uniform(0.8, 1.2)
    # Radial axes (x, y) see rotation 90 degrees apart; the axial axis (z) sees little of it.
    radial = np.array([1.0, 1.0, 0.3, 0.6, 0.6, 0.6][:channels])
    axial = np.array([0.3, 0.3, 1.0, 0.5, 0.5, 0.5][:channels])
    one_x = np.sin(2 * np.pi * f * t[:, None] + phase)
    out = 0.3 * radial * one_x
    if label == "imbalance":
        out = out + 1.2 * gain * radial * one_x
    elif label == "misalignment":
        out = out + 0.9 * gain * axial * np.sin(4 * np.pi * f * t[:, None] + 2 * phase)
    elif label == "bearing_fault":
        defect = 3.6 * f
        pulses = np.maximum(0.0, np.sin(2 * np.pi * defect * t)) ** 12
        ring = np.sin(2 * np.pi * 0.4 * sample_rate_hz * t)
        out = out + 1.5 * gain * (pulses * ring)[:, None] * radial
    out = out + rng.normal(0.0, noise, size=out.shape)
    return out.astype(np.float32)


def make_windows(
    n_per_class: int = 20,
    *,
    window: int = 64,
    channels: int = 3,
    labels: tuple[str, ...] = LABELS,
    noise: float = 0.3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Labelled windows for classification.

    Parameters
    ----------
    n_per_class : int
        Windows per label.
    window : int
        Samples per window.
    channels : int
        Channels per sample (1 to 6).
    labels : tuple of str
        Which of :data:`LABELS` to generate.
    noise : float
        Standard deviation of the sensor noise.
    seed : int
        Seed of the random generator.

    Returns
    -------
    X : ndarray of float32, shape (n_per_class * len(labels), window, channels)
    y : ndarray of str, shape (n,)
        Windows and their labels, shuffled.
    """
    if not 1 <= channels <= 6:
        raise ValueError(f"channels must be between 1 and 6, got {channels}")
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label in labels:
        for _ in range(n_per_class):
            xs.append(signal(label, window, rng, channels=channels, noise=noise))
            ys.append(label)
    order = rng.permutation(len(xs))
    return np.stack(xs)[order], np.array(ys)[order]


# --- Faults for anomaly detection ------------------------------------------------------
# Anomaly models are trained on ``normal`` running only; these are what they must flag.
# Each fault is something a sensor or a machine really does, at a size a vibration engineer
# would notice in a plot but that stays inside the sensor's range:
#
# - ``spike``: single-sample glitches (a loose connector, EMI) of 2.5 to 4 units on one axis;
# - ``drift``: one axis slowly walks away from zero (temperature drift, a sensor coming
#   loose), by 0.8 to 1.5 units over a 64-sample window;
# - ``frequency``: the machine turns 1.5 to 2 times faster or slower than its normal 5 Hz;
# - ``stuck``: one axis freezes at its last value (a hung ADC, a dead sensor) for at least
#   three quarters of the window.
#
# ``severity`` scales each fault's size (1.0 is the documented default): benchmarks sweep it
# to show where detection starts to fail.

FAULTS = ("spike", "drift", "frequency", "stuck")


def faulty_signal(
    fault: str,
    n_samples: int,
    rng: np.random.Generator,
    *,
    start: int = 0,
    channels: int = 3,
    noise: float = 0.3,
    severity: float = 1.0,
) -> np.ndarray:
    """A ``normal`` recording with ``fault`` present from sample ``start`` on.

    Parameters
    ----------
    fault : str
        One of :data:`FAULTS`.
    n_samples : int
        Length of the recording.
    rng : numpy.random.Generator
        Source of randomness (the caller seeds it).
    start : int
        First faulty sample; samples before it are ordinary ``normal`` running.
    channels : int
        Channels per sample (1 to 6).
    noise : float
        Standard deviation of the sensor noise.
    severity : float
        Size of the fault relative to the documented default (1.0).

    Returns
    -------
    ndarray of float32, shape (n_samples, channels)
    """
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; choose one of {FAULTS}")
    if not 0 <= start < n_samples:
        raise ValueError(f"start must be in [0, {n_samples}), got {start}")
    if severity <= 0:
        raise ValueError(f"severity must be > 0, got {severity}")
    x = signal("normal", n_samples, rng, channels=channels, noise=noise)
    n = n_samples - start
    axis = rng.integers(channels)
    if fault == "spike":
        # About one glitch per 32 samples, at least one.
        count = max(1, int(rng.binomial(n, 1 / 32)))
        at = start + rng.choice(n, size=min(count, n), replace=False)
        size = severity * rng.uniform(2.5, 4.0, size=at.size) * rng.choice([-1.0, 1.0], at.size)
        x[at, rng.integers(channels, size=at.size)] += size
    elif fault == "drift":
        per_sample = severity * rng.uniform(0.8, 1.5) / 64 * rng.choice([-1.0, 1.0])
        x[start:, axis] += per_sample * np.arange(1, n + 1)
    elif fault == "frequency":
        # A normal machine seen at a lower sample rate turns faster in sample time: signal()
        # then draws a fresh 1x phase and white noise, as a real speed change would show.
        factor = 1.0 + severity * rng.uniform(0.5, 1.0)
        if rng.random() < 0.5:
            factor = 1.0 / factor
        fast = signal(
            "normal", n, rng, channels=channels, noise=noise,
            sample_rate_hz=SAMPLE_RATE_HZ / factor,
        )
        x[start:] = fast
    else:  # stuck
        x[start:, axis] = x[start, axis]
    return x.astype(np.float32)


def make_fault_windows(
    n_per_fault: int = 20,
    *,
    window: int = 64,
    channels: int = 3,
    faults: tuple[str, ...] = FAULTS,
    noise: float = 0.3,
    severity: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``normal`` running with one injected fault each, for anomaly tests.

    Spikes, drift and speed changes start at the first sample; a stuck sensor freezes
    somewhere in the first quarter of the window.

    Parameters
    ----------
    n_per_fault : int
        Windows per fault.
    window, channels, noise, seed
        As in :func:`make_windows`.
    faults : tuple of str
        Which of :data:`FAULTS` to generate.
    severity : float
        Fault size relative to the documented default (1.0).

    Returns
    -------
    X : ndarray of float32, shape (n_per_fault * len(faults), window, channels)
    fault : ndarray of str, shape (n,)
        The fault in each window, shuffled together with ``X``.
    """
    if not 1 <= channels <= 6:
        raise ValueError(f"channels must be between 1 and 6, got {channels}")
    rng = np.random.default_rng(seed)
    xs, kinds = [], []
    for fault in faults:
        for _ in range(n_per_fault):
            start = int(rng.integers(window // 4)) if fault == "stuck" else 0
            xs.append(
                faulty_signal(
                    fault, window, rng, start=start, channels=channels, noise=noise,
                    severity=severity,
                )
            )
            kinds.append(fault)
    order = rng.permutation(len(xs))
    return np.stack(xs)[order], np.array(kinds)[order]


def write_recording(
    path,
    segments: list[tuple[str, int]],
    *,
    seed: int = 0,
    channels: tuple[str, ...] = CHANNELS,
    labels: bool = True,
    device: str = "sim",
    severity: float = 1.0,
    start_ts: float = 1_700_000_000.0,
) -> None:
    """Write a CSV sensor log (the format ``sigmoid-train`` reads) of consecutive segments.

    Parameters
    ----------
    path : str or path-like
        The CSV file (replaced).
    segments : list of (str, int)
        ``(kind, n_samples)`` in order; ``kind`` is ``"normal"`` (one continuous normal
        recording across all normal segments) or one of :data:`FAULTS`.
    seed : int
        Seed of the random generator.
    channels : tuple of str
        Channel names (1 to 6).
    labels : bool
        Write a ``label`` column with each segment's kind.
    device : str
        The ``device`` column.
    severity : float
        Fault size (see :func:`faulty_signal`).
    start_ts : float
        Time stamp of the first sample, in seconds.
    """
    from pathlib import Path

    from edge.tools.sensorfiles import CsvWriter

    rng = np.random.default_rng(seed)
    n_ch = len(channels)
    total = sum(n for _, n in segments)
    normal = signal("normal", total, rng, channels=n_ch)
    parts, kinds = [], []
    at = 0
    for kind, n in segments:
        if kind == "normal":
            parts.append(normal[at:at + n])
        else:
            parts.append(faulty_signal(kind, n, rng, channels=n_ch, severity=severity))
        kinds += [kind] * n
        at += n
    values = np.concatenate(parts)
    ts = start_ts + np.arange(total) / SAMPLE_RATE_HZ
    path = Path(path)
    path.unlink(missing_ok=True)
    with CsvWriter(path, channels, device=True, label=labels) as w:
        w.write_many(ts, values, device=[device] * total, label=kinds if labels else None)
