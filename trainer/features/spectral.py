"""Spectral band energies per channel: a DFT as one MatMul, like a DSP spectral block.

A window's channels (channels-first, ``[batch, C, W]``) are multiplied with one
precomputed ``[W, 2K]`` matrix of Hann-weighted cosines and sines at K frequencies
between the lowest non-zero DFT bin and Nyquist (every bin up to ``max_bins``, evenly
spaced bins above that: each band still sees several, and the MatMul stays small; the
DC bin is left to the statistics). Squaring and a second MatMul with a ``[2K, B]``
matrix add ``re**2 + im**2`` over each of B equal-width bands. Features are
``log(energy + eps)``.

The spectrum of the first difference (view ``diff``) comes from the same DFT: the
difference filter ``x[t] - x[t - 1]`` multiplies the power at angular frequency ``w``
by ``|1 - exp(-i w)|**2 = 4 sin(w / 2)**2``, so its band energies are a second set of
band weights on the same power, one more column block in the band matrix, no second
DFT. Features are ordered per channel: its bands, then (with ``diff``) its difference's
bands.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.features.common import channels_first, check_views, per_window, views_np
from trainer.graph import GraphBuilder

EPS = 1e-6


def dft_matrices(window: int, bands: int, max_bins: int,
                 which: tuple[str, ...] = ("x",)) -> tuple[np.ndarray, np.ndarray]:
    """The ``[W, 2K]`` Hann-weighted cos|sin matrix and the ``[2K, B * len(which)]`` band matrix.

    The DFT is scaled so that a band energy is a mean square, independent of ``W``.
    """
    n_bins = max(1, window // 2)
    if n_bins <= max_bins:
        k = np.arange(1, n_bins + 1, dtype=float)
    else:
        k = np.unique(np.round(np.linspace(1, n_bins, max_bins)))
    t = np.arange(window)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * (t + 0.5) / window)
    scale = np.sqrt(n_bins / len(k)) / np.sqrt(window * np.sum(hann**2) / 2)
    angle = 2 * np.pi * np.outer(t, k) / window
    dft = np.concatenate([np.cos(angle), np.sin(angle)], axis=1) * (hann[:, None] * scale)
    n_bands = min(bands, len(k))
    band_of_bin = np.minimum(((k - 1) * n_bands / n_bins).astype(int), n_bands - 1)
    sums = np.zeros((len(k), n_bands))
    sums[np.arange(len(k)), band_of_bin] = 1.0
    blocks = []
    for v in which:
        gain = np.ones(len(k)) if v == "x" else 4 * np.sin(np.pi * k / window) ** 2
        blocks.append(np.concatenate([sums, sums]) * np.concatenate([gain, gain])[:, None])
    return dft.astype(np.float32), np.concatenate(blocks, axis=1).astype(np.float32)


class Spectral:
    """Log band energies of the Hann-windowed DFT (a :class:`~trainer.features.base.FeatureFamily`).

    Parameters
    ----------
    bands : int
        Number of equal-width frequency bands (fewer if the window has fewer bins).
    max_bins : int
        At most this many DFT frequencies (bounds the MatMul for long windows).
    views : tuple of str or str
        ``("x",)`` the signal, ``("diff",)`` its first difference, or both.
    """

    name = "spectral"

    def __init__(self, bands: int = 8, max_bins: int = 24,
                 views: tuple[str, ...] | str = ("x",)):
        self.bands = bands
        self.max_bins = max_bins
        self.views = views

    def fit(self, windows: np.ndarray) -> Spectral:
        if int(self.bands) < 1 or int(self.max_bins) < 1:
            raise ValueError(f"bands and max_bins must be >= 1, got {self.bands}, "
                             f"{self.max_bins}")
        self.views_ = check_views(self.views)
        self.window_, self.n_channels_ = windows.shape[1], windows.shape[2]
        self.dft_, self.band_matrix_ = dft_matrices(
            self.window_, int(self.bands), int(self.max_bins), self.views_)
        self.n_bands_ = self.band_matrix_.shape[1] // len(self.views_)
        return self

    def transform(self, windows: np.ndarray) -> np.ndarray:
        x = views_np(windows, ("x",))  # [N, C, W]
        coef = x @ self.dft_
        energy = (coef * coef) @ self.band_matrix_
        return np.log(energy + np.float32(EPS)).reshape(len(x), -1).astype(np.float32)

    def to_onnx(self, g: GraphBuilder, window: str) -> str:
        p = getattr(self, "prefix", self.name)
        x = channels_first(g, window)
        coef = g.op("MatMul", [x, g.const(f"{p}_dft_matrix", self.dft_)], name=f"{p}_dft")
        power = g.op("Mul", [coef, coef], name=f"{p}_power")
        energy = g.op("MatMul", [power, g.const(f"{p}_band_matrix", self.band_matrix_)],
                      name=f"{p}_band_energy")
        shifted = g.op("Add", [energy, g.const(f"{p}_eps", np.float32(EPS))],
                       name=f"{p}_energy_eps")
        log_energy = g.op("Log", [shifted], name=f"{p}_log_energy")
        return per_window(g, log_energy, self.n_channels_ * self.band_matrix_.shape[1], p)

    def feature_names(self, channels: list[str]) -> list[str]:
        return [f"band{b}({c if v == 'x' else f'diff({c})'})"
                for c in channels for v in self.views_ for b in range(self.n_bands_)]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "bands": int(self.n_bands_), "frequencies":
                int(self.dft_.shape[1] // 2), "window": int(self.window_),
                "views": list(self.views_)}
