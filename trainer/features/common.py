"""Graph pieces the built-in feature families share, emitted once per graph.

The built-in families (stats, spectral, raw) read the window channels-first as
*views*: ``[batch, C', W]`` where the C' rows are the channels (view ``"x"``), the first
differences of the channels (view ``"diff"``), or both stacked. The first difference is
``x[t] - x[t - 1]`` with its first value repeated (edge padding), so that it has W
samples like the signal and both can go through the same nodes at once: one ReduceMean
over ``[batch, 2C, W]`` instead of two. That matters on a Raspberry Pi, where each node
costs about a microsecond however small its input (measured with onnxruntime 1.27).
Time is the last axis, so reductions and the ``[.., W] @ [W, K]`` MatMuls run on
contiguous memory.
"""

from __future__ import annotations

import numpy as np

from trainer.graph import GraphBuilder

VIEWS = ("x", "diff")
_INT64_MAX = np.iinfo(np.int64).max


def check_views(views) -> tuple[str, ...]:
    views = tuple(views.split("+")) if isinstance(views, str) else tuple(views)
    if not views or any(v not in VIEWS for v in views) or len(set(views)) != len(views):
        raise ValueError(f"views must be a non-empty subset of {VIEWS}, got {views}")
    return tuple(v for v in VIEWS if v in views)  # canonical order: x before diff


def view_names(channels: list[str], views: tuple[str, ...]) -> list[str]:
    """Row names of a views tensor: ``x, y, ..., diff(x), diff(y), ...``."""
    return [c if v == "x" else f"diff({c})" for v in views for c in channels]


def _memo(g: GraphBuilder) -> dict:
    memo = getattr(g, "_feature_memo", None)
    if memo is None:
        memo = g._feature_memo = {}
    return memo


def channels_first(g: GraphBuilder, window: str) -> str:
    """``[batch, W, C]`` -> ``[batch, C, W]`` (once per graph)."""
    memo = _memo(g)
    key = ("x", window)
    if key not in memo:
        memo[key] = g.op("Transpose", [window], name="channels_first", perm=[0, 2, 1])
    return memo[key]


def difference(g: GraphBuilder, window: str) -> str:
    """First difference of the channels-first window, edge-padded to W samples."""
    memo = _memo(g)
    key = ("diff", window)
    if key not in memo:
        x = channels_first(g, window)
        axes = g.const("time_axis", np.array([2], np.int64))
        later = g.op("Slice", [x, g.const("from_1", np.array([1], np.int64)),
                               g.const("to_end", np.array([_INT64_MAX], np.int64)), axes],
                     name="later_samples")
        earlier = g.op("Slice", [x, g.const("from_0", np.array([0], np.int64)),
                                 g.const("to_last", np.array([-1], np.int64)), axes],
                       name="earlier_samples")
        step = g.op("Sub", [later, earlier], name="sample_steps")
        memo[key] = g.op("Pad", [step, g.const("pad_first_step", np.array(
            [0, 0, 1, 0, 0, 0], np.int64))], name="first_difference", mode="edge")
    return memo[key]


def views(g: GraphBuilder, window: str, which: tuple[str, ...]) -> str:
    """The views tensor ``[batch, C * len(which), W]`` for ``which`` (see module docstring)."""
    memo = _memo(g)
    key = ("views", window, which)
    if key not in memo:
        parts = [channels_first(g, window) if v == "x" else difference(g, window)
                 for v in which]
        memo[key] = parts[0] if len(parts) == 1 else g.op(
            "Concat", parts, name="signal_and_difference", axis=1)
    return memo[key]


def views_np(windows: np.ndarray, which: tuple[str, ...]) -> np.ndarray:
    """numpy twin of :func:`views`: float32 ``[N, C * len(which), W]``."""
    x = np.swapaxes(np.asarray(windows, np.float32), 1, 2)
    parts = []
    for v in which:
        if v == "x":
            parts.append(x)
        else:
            step = x[:, :, 1:] - x[:, :, :-1]
            parts.append(np.concatenate([step[:, :, :1], step], axis=2))
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def per_window(g: GraphBuilder, x: str, n_features: int, name: str) -> str:
    """``[batch, rows, k]`` -> ``[batch, rows * k]`` (row-major: all of row 0 first)."""
    shape = g.const(f"{name}_shape", np.array([-1, n_features], np.int64))
    return g.op("Reshape", [x, shape], name=name)


def first_difference(g: GraphBuilder, window: str) -> str:
    """``[batch, W, C]`` -> ``[batch, W - 1, C]``, for plug-in families (``diff_conv``)."""
    memo = _memo(g)
    key = ("diff_window", window)
    if key not in memo:
        axes = g.const("window_time_axis", np.array([1], np.int64))
        later = g.op("Slice", [window, g.const("from_1", np.array([1], np.int64)),
                               g.const("to_end", np.array([_INT64_MAX], np.int64)), axes],
                     name="window_later")
        earlier = g.op("Slice", [window, g.const("from_0", np.array([0], np.int64)),
                                 g.const("to_last", np.array([-1], np.int64)), axes],
                       name="window_earlier")
        memo[key] = g.op("Sub", [later, earlier], name="window_difference")
    return memo[key]


def first_difference_np(windows: np.ndarray) -> np.ndarray:
    return windows[:, 1:] - windows[:, :-1]
