"""Raw samples, optionally downsampled by averaging, as features.

``points`` output samples per channel; each is the mean of one of ``points`` equal runs
of consecutive input samples (a box filter, so downsampling does not alias). Done as one
MatMul with a ``[W, points]`` averaging matrix; with ``points >= W`` the samples are
passed through. Features are ordered channel-major (``x[0], x[1], ..., y[0], ...``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.features.common import check_views, per_window, view_names, views, views_np
from trainer.graph import GraphBuilder


def averaging_matrix(window: int, points: int) -> np.ndarray:
    """``[window, points]``: column j averages the samples of run j (fractional edges split)."""
    if points >= window:
        return np.eye(window, dtype=np.float32)
    edges = np.linspace(0.0, window, points + 1)
    t = np.arange(window)
    # Overlap of sample t (covering [t, t+1)) with run j (covering [edges[j], edges[j+1])).
    overlap = np.clip(np.minimum(t[:, None] + 1, edges[None, 1:])
                      - np.maximum(t[:, None], edges[None, :-1]), 0.0, None)
    return (overlap / overlap.sum(axis=0, keepdims=True)).astype(np.float32)


class Raw:
    """Raw (optionally averaged-down) samples (a :class:`~trainer.features.base.FeatureFamily`).

    Parameters
    ----------
    points : int or None
        Samples per channel after downsampling; ``None`` keeps every sample.
    views : tuple of str or str
        ``("x",)`` the signal, ``("diff",)`` its first difference, or both.
    """

    name = "raw"

    def __init__(self, points: int | None = 32, views: tuple[str, ...] | str = ("x",)):
        self.points = points
        self.views = views

    def fit(self, windows: np.ndarray) -> Raw:
        if self.points is not None and int(self.points) < 1:
            raise ValueError(f"points must be >= 1 or None, got {self.points}")
        self.views_ = check_views(self.views)
        self.window_, self.n_channels_ = windows.shape[1], windows.shape[2]
        self.matrix_ = averaging_matrix(self.window_, int(self.points or self.window_))
        return self

    @property
    def _identity(self) -> bool:
        return self.matrix_.shape[1] == self.window_

    def transform(self, windows: np.ndarray) -> np.ndarray:
        x = views_np(windows, self.views_)
        out = x if self._identity else x @ self.matrix_
        return out.reshape(len(x), -1).astype(np.float32)

    def to_onnx(self, g: GraphBuilder, window: str) -> str:
        p = getattr(self, "prefix", self.name)
        x = views(g, window, self.views_)
        if not self._identity:
            x = g.op("MatMul", [x, g.const(f"{p}_average_matrix", self.matrix_)],
                     name=f"{p}_downsample")
        n = self.n_channels_ * len(self.views_) * self.matrix_.shape[1]
        return per_window(g, x, n, p)

    def feature_names(self, channels: list[str]) -> list[str]:
        return [f"{r}[{j}]" for r in view_names(channels, self.views_)
                for j in range(self.matrix_.shape[1])]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "points": int(self.matrix_.shape[1]),
                "window": int(self.window_), "views": list(self.views_)}
