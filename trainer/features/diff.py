"""A plug-in feature family applied to the first difference of the window (``diff_conv``).

The built-in families (stats, spectral, raw) handle ``diff_`` themselves through their
``views`` parameter, sharing graph nodes with the plain signal; this wrapper is for any
other family: it gives the family ``x[t + 1] - x[t]``, a window one sample shorter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.features.common import first_difference, first_difference_np
from trainer.graph import GraphBuilder

PREFIX = "diff_"


class FirstDifference:
    """Wrap a family so that it sees ``window[:, 1:] - window[:, :-1]``.

    Parameters
    ----------
    inner : FeatureFamily
        The family to apply (its window length becomes ``W - 1``).
    """

    def __init__(self, inner):
        self.inner = inner
        self.name = PREFIX + inner.name
        inner.prefix = self.name  # so its graph nodes read diff_stats_..., not stats_...

    def fit(self, windows: np.ndarray) -> FirstDifference:
        if windows.shape[1] < 2:
            raise ValueError(f"{self.name} needs windows of at least 2 samples, "
                             f"got {windows.shape[1]}")
        self.inner.fit(first_difference_np(np.asarray(windows, np.float32)))
        return self

    def transform(self, windows: np.ndarray) -> np.ndarray:
        return self.inner.transform(first_difference_np(np.asarray(windows, np.float32)))

    def to_onnx(self, g: GraphBuilder, window: str) -> str:
        return self.inner.to_onnx(g, first_difference(g, window))

    def feature_names(self, channels: list[str]) -> list[str]:
        return [f"diff:{n}" for n in self.inner.feature_names(channels)]

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "name": self.name}
