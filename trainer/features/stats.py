"""Per-channel statistics of a window: mean, std, min, max (and RMS, skewness, kurtosis).

Each statistic is computed over time for every row of the views tensor (the channels,
and with ``diff`` their first differences; see :mod:`trainer.features.common`), giving
``len(stats) * rows`` features ordered row-major (``mean(x), std(x), ..., mean(y), ...``).
Skewness and kurtosis divide by ``std**3`` and ``std**4`` plus a small epsilon, so a
flat channel gives 0 instead of NaN. They are off by default: on the shared data sets
they did not add accuracy and each costs three more graph nodes. The numpy and the
ONNX code below are twins: change one, change the other (``tests/test_features.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.features.common import check_views, per_window, view_names, views, views_np
from trainer.graph import GraphBuilder

ALL_STATS = ("mean", "std", "min", "max", "rms", "skew", "kurt")
DEFAULT_STATS = ("mean", "std", "min", "max")
EPS = 1e-6


class Stats:
    """Per-channel statistics over time (a :class:`~trainer.features.base.FeatureFamily`).

    Parameters
    ----------
    stats : tuple of str or str
        Which statistics, any of :data:`ALL_STATS`, in output order (a string is split on
        ``+``: ``stats:stats=mean+std+rms`` on the command line).
    views : tuple of str or str
        ``("x",)`` the signal, ``("diff",)`` its first difference, or both.
    """

    name = "stats"

    def __init__(self, stats: tuple[str, ...] | str = DEFAULT_STATS,
                 views: tuple[str, ...] | str = ("x",)):
        self.stats = stats
        self.views = views

    def fit(self, windows: np.ndarray) -> Stats:
        stats = self.stats.split("+") if isinstance(self.stats, str) else self.stats
        self.stats_ = tuple(stats)
        unknown = [s for s in self.stats_ if s not in ALL_STATS]
        if unknown or not self.stats_ or len(set(self.stats_)) != len(self.stats_):
            raise ValueError(f"stats must be a non-empty subset of {ALL_STATS}, got {stats}")
        self.views_ = check_views(self.views)
        self.window_, self.n_channels_ = windows.shape[1], windows.shape[2]
        self.n_rows_ = self.n_channels_ * len(self.views_)
        return self

    def transform(self, windows: np.ndarray) -> np.ndarray:
        x = views_np(windows, self.views_)  # [N, rows, W]
        mean = x.mean(axis=2, keepdims=True)
        centered = x - mean
        c2 = centered * centered
        var = c2.mean(axis=2, keepdims=True)
        std = np.sqrt(var)
        eps = np.float32(EPS)
        out = {
            "mean": lambda: mean,
            "std": lambda: std,
            "min": lambda: x.min(axis=2, keepdims=True),
            "max": lambda: x.max(axis=2, keepdims=True),
            "rms": lambda: np.sqrt(var + mean * mean),
            "skew": lambda: (c2 * centered).mean(axis=2, keepdims=True) / (var * std + eps),
            "kurt": lambda: (c2 * c2).mean(axis=2, keepdims=True) / (var * var + eps),
        }
        both = np.concatenate([out[s]() for s in self.stats_], axis=2)
        return both.reshape(len(x), -1).astype(np.float32)

    def to_onnx(self, g: GraphBuilder, window: str) -> str:
        p = getattr(self, "prefix", self.name)
        x = views(g, window, self.views_)
        axes = g.const(f"{p}_time_axis", np.array([2], np.int64))
        mean = g.op("ReduceMean", [x, axes], name=f"{p}_mean", keepdims=1)
        cache: dict[str, str] = {}

        def centered() -> str:
            if "c" not in cache:
                cache["c"] = g.op("Sub", [x, mean], name=f"{p}_centered")
                cache["c2"] = g.op("Mul", [cache["c"], cache["c"]], name=f"{p}_centered_sq")
                cache["var"] = g.op("ReduceMean", [cache["c2"], axes], name=f"{p}_var",
                                    keepdims=1)
            return cache["c"]

        def var() -> str:
            centered()
            return cache["var"]

        def std() -> str:
            if "std" not in cache:
                cache["std"] = g.op("Sqrt", [var()], name=f"{p}_std")
            return cache["std"]

        def rms() -> str:
            sq = g.op("Mul", [mean, mean], name=f"{p}_mean_sq")
            return g.op("Sqrt", [g.op("Add", [var(), sq], name=f"{p}_mean_sq_plus_var")],
                        name=f"{p}_rms")

        def eps() -> str:
            if "eps" not in cache:
                cache["eps"] = g.const(f"{p}_eps", np.float32(EPS))
            return cache["eps"]

        def skew() -> str:
            c = centered()
            m3 = g.op("ReduceMean", [g.op("Mul", [cache["c2"], c], name=f"{p}_centered_cube"),
                                     axes], name=f"{p}_m3", keepdims=1)
            den = g.op("Add", [g.op("Mul", [var(), std()], name=f"{p}_std_cube"), eps()],
                       name=f"{p}_std_cube_eps")
            return g.op("Div", [m3, den], name=f"{p}_skew")

        def kurt() -> str:
            centered()
            c2 = cache["c2"]
            m4 = g.op("ReduceMean", [g.op("Mul", [c2, c2], name=f"{p}_centered_4th"), axes],
                      name=f"{p}_m4", keepdims=1)
            den = g.op("Add", [g.op("Mul", [var(), var()], name=f"{p}_var_sq"), eps()],
                       name=f"{p}_var_sq_eps")
            return g.op("Div", [m4, den], name=f"{p}_kurt")

        make = {
            "mean": lambda: mean,
            "std": std,
            "min": lambda: g.op("ReduceMin", [x, axes], name=f"{p}_min", keepdims=1),
            "max": lambda: g.op("ReduceMax", [x, axes], name=f"{p}_max", keepdims=1),
            "rms": rms,
            "skew": skew,
            "kurt": kurt,
        }
        parts = [make[s]() for s in self.stats_]
        both = parts[0] if len(parts) == 1 else g.op("Concat", parts, name=f"{p}_all", axis=2)
        return per_window(g, both, self.n_rows_ * len(self.stats_), p)

    def feature_names(self, channels: list[str]) -> list[str]:
        return [f"{s}({r})" for r in view_names(channels, self.views_) for s in self.stats_]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "stats": list(self.stats_), "views": list(self.views_)}
