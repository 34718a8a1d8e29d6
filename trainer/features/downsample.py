"""Any family on a smoothed, shorter window: the mean of every ``factor`` samples.

``conv:pool=10080:keep=auto:downsample=7`` gives the family ``[N, W // factor, C]``: each
sample the mean of ``factor`` consecutive ones (the last ``W % factor`` samples are
dropped). On long windows of smooth signals MiniRocket's kernels then see the shape, not
the sample-to-sample noise: on PigCVP (2,000 samples) the pruned pool scored 0.93 on
test with ``downsample=10`` against 0.75 without, at the same latency budget; on other
long sets it lost 3-5 points, so the default selection offers it as a candidate and lets
cross-validation choose (BENCHMARKS.md, "Fourth pass"). In the graph it is one
``Conv`` (stride ``factor``) in front of the family's nodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.graph import GraphBuilder

PARAMETER = "downsample"


def block_mean(windows: np.ndarray, factor: int) -> np.ndarray:
    """``[N, W, C]`` -> ``[N, W // factor, C]``: the mean of each ``factor`` samples (float32)."""
    x = np.asarray(windows, np.float32)
    n, w, c = x.shape
    short = w // factor
    return x[:, :short * factor].reshape(n, short, factor, c).mean(axis=2, dtype=np.float32)


class Downsampled:
    """Wrap a family so that it sees :func:`block_mean` of the window.

    Parameters
    ----------
    inner : FeatureFamily
        The family to apply (its window becomes ``W // factor`` samples).
    factor : int
        Samples averaged into one, at least 2.

    The wrapper passes the labels and folds on to a supervised family (a pruned conv
    pool) and reads through to its fitted attributes (``pruning_``, ``fold_features_``).
    Note that a pruned pool's latency budget is timed on its own graph: the nodes in front
    (``Transpose``, ``Conv``, ``Transpose``) cost a few reference microseconds more, within
    the share of the budget kept for the rest of the model (the selection times whole
    models).
    """

    def __init__(self, inner, factor: int):
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 2:
            raise ValueError(f"{PARAMETER} must be a whole number of samples >= 2, "
                             f"got {factor!r}")
        self.inner, self.factor = inner, factor
        self.name = inner.name

    @property
    def supervised(self) -> bool:
        return bool(getattr(self.inner, "supervised", False))

    def __getattr__(self, attr: str):
        # Only reached for attributes the wrapper lacks: the inner family's fitted state.
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def _shorter(self, windows: np.ndarray) -> np.ndarray:
        x = np.asarray(windows)
        if x.ndim != 3 or x.shape[1] < 2 * self.factor:
            raise ValueError(f"{PARAMETER}={self.factor} needs windows [N, W, C] of at least "
                             f"{2 * self.factor} samples, got shape {x.shape}; "
                             f"use a smaller {PARAMETER}")
        return block_mean(x, self.factor)

    def fit(self, windows: np.ndarray, y=None, splits=None) -> Downsampled:
        self.window_, self.channels_ = np.asarray(windows).shape[1:]
        x = self._shorter(windows)
        if self.supervised:
            self.inner.fit(x, y, splits=splits)
        else:
            self.inner.fit(x)
        return self

    def transform(self, windows: np.ndarray) -> np.ndarray:
        return self.inner.transform(self._shorter(windows))

    def to_onnx(self, g: GraphBuilder, window: str) -> str:
        return self.inner.to_onnx(g, block_mean_onnx(g, window, self.window_, self.factor,
                                                     self.channels_))

    def feature_names(self, channels: list[str]) -> list[str]:
        return [f"mean{self.factor}:{n}" for n in self.inner.feature_names(channels)]

    def describe(self) -> dict[str, Any]:
        inner = self.inner.describe()
        return {**inner, PARAMETER: self.factor, "window": self.window_,
                "downsampled_window": inner.get("window", self.window_ // self.factor)}


def block_mean_onnx(g: GraphBuilder, window: str, length: int, factor: int,
                    channels: int) -> str:
    """Graph twin of :func:`block_mean` for ``window`` ``[batch, length, channels]``.

    A ``Conv`` (weights ``1 / factor``, stride ``factor``; it drops the last
    ``length % factor`` samples as :func:`block_mean` does) between two ``Transpose``:
    measured 3x cheaper in onnxruntime than ``Reshape`` + ``ReduceMean`` over the blocks
    (about 7 against 19 reference us at 2,000 samples), with operators every runtime of
    ours already has.
    """
    x = g.op("Transpose", [window], name="downsample_channels_first", perm=[0, 2, 1])
    # Channel i reads only channel i. Not group=channels: the numpy runtime's Conv (32-bit
    # Pis) has no groups, and the zero weights add exact zeros, so the sums are the same.
    weights = np.eye(channels, dtype=np.float32)[:, :, None] * np.float32(1.0 / factor)
    weights = np.repeat(weights, factor, axis=2)
    x = g.op("Conv", [x, g.const("downsample_weights", weights)], name="downsample_mean",
             kernel_shape=[factor], strides=[factor])
    return g.op("Transpose", [x], name="downsample_time_first", perm=[0, 2, 1])
