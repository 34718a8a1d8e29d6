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
