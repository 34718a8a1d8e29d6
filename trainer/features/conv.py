"""MiniRocket-style convolutional features, in numpy and as ONNX nodes.

The recipe of Dempster, Schmidt and Webb, "MiniRocket: A Very Fast (Almost) Deterministic
Transform for Time Series Classification" (KDD 2021), with its multivariate variant:

- 84 fixed kernels of length 9: every choice of three positions weighted 2, the other six
  weighted -1 (so each kernel sums to zero);
- dilations ``floor(2 ** e)`` for ``e`` evenly spaced in ``[0, log2((W - 1) / 8)]`` (at most 32
  per kernel), so the receptive field spans up to the whole window;
- per kernel and dilation, a random subset of channels (size ``floor(2 ** u)``, ``u`` uniform in
  ``[0, log2(min(C, 9) + 1))``) whose convolutions are summed;
- biases from quantiles (a golden-ratio low-discrepancy sequence) of that output on one random
  training window;
- one feature per bias: the proportion of positive values (PPV) of ``output - bias``;
- alternating padding: half the kernel/dilation pairs are zero-padded to the full window, the
  other half use only positions where the kernel fits (no padding).

Two deliberate differences from the paper, both for float robustness of the exported graph:

- the window (not its difference) is first centred by its training mean per channel. Kernels
  sum to zero, so this changes nothing inside the window; it makes the zero padding mean "pad
  with the training mean" and keeps float32 cancellation small for signals with a large offset
  (e.g. 1000 + noise).
- biases are *nudged* off the values the convolution actually takes. Flat segments (and
  quantized sensors) give outputs that are exactly equal in exact arithmetic (0 on a flat
  segment, small multiples of one level near the padded edges); a bias equal to such a value
  makes ``output > bias`` depend on float summation order, which differs between numpy, the
  onnxruntime build and the CPU (a probe saw 2-3% of predictions flip on ACSF1). So a bias is
  put inside the gap between two neighbouring distinct values of the sampled output (the gap
  nearest in rank to the wanted quantile), at the golden-section point of that gap rather than
  its middle: the middle of a gap between 0 and 2v is v, itself a value other windows take.

``transform`` (numpy) and ``to_onnx`` (Conv, Greater, Cast, ReduceMean) compute the same
features in the same order: for each dilation, the zero-padded kernels then the unpadded ones,
each kernel followed by its biases.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto

from trainer.features.kernels import KERNEL_LENGTH, KERNELS, N_KERNELS, first_position
from trainer.features.kernels import taps as _taps
from trainer.graph import GraphBuilder

# 84 x 12 = 1008 features: within half a point of 10,000 on the probe, ~10x cheaper on a Pi.
DEFAULT_N_FEATURES = 1008
MAX_DILATIONS_PER_KERNEL = 32
# Outputs closer than REL_TOL x (the largest sum |w||x| of the window) count as one value when
# biases are placed; float32 convolution errors are far below it (~ n_terms x 6e-8).
REL_TOL = 1e-4
# Where in a gap between two distinct outputs a bias goes: 1 / golden ratio ** 2. Irrational,
# so a bias lands on no small multiple of the gap (the middle would hit k * v lattices).
GAP_SPLIT = (3.0 - np.sqrt(5.0)) / 2.0
# Accuracy a pruned pool (keep="auto") may give up for fewer features: half a point, as
# Detach-ROCKET's default.
DEFAULT_TOLERANCE = 0.005
# A pruned pool counts each feature's PPV on every s-th position, s = W // POOL_POSITIONS
# (about this many positions, at least): the cost of a kept feature in the exported graph is
# its convolution and comparisons over the positions counted, so on long windows a budget
# holds s times more features. A proportion over 128 positions has a standard error of at
# most 4.4 points. Measured (logistic head, BENCHMARKS.md): ACSF1 (W=1460, s=11) and
# OSULeaf (W=427, s=3) within a window or two of every position at 100-800 kept features;
# 64 positions measured no worse there, 128 is the cautious choice.
POOL_POSITIONS = 128
# Bound the float32 work array of one transform chunk (windows x positions x taps).
_CHUNK_ELEMENTS = 8_000_000


def fit_dilations(
    window: int,
    n_features_per_kernel: int,
    max_dilations_per_kernel: int = MAX_DILATIONS_PER_KERNEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Dilations for a window length and how many features (biases) each one gets per kernel.

    Exactly MiniRocket's ``_fit_dilations``: exponentially spaced dilations, duplicates merged,
    their features shared out in proportion to how often each was drawn.

    Parameters
    ----------
    window : int
        Samples per window.
    n_features_per_kernel : int
        Features per kernel, summed over dilations.
    max_dilations_per_kernel : int
        At most this many (pre-merge) dilations.

    Returns
    -------
    dilations : ndarray of int, shape (n_dilations,)
    features_per_dilation : ndarray of int, shape (n_dilations,)
        Sums to ``n_features_per_kernel``.
    """
    n_steps = min(n_features_per_kernel, max_dilations_per_kernel)
    multiplier = n_features_per_kernel / n_steps
    # Windows shorter than one kernel span get dilation 1 only (the paper needs W >= 9).
    max_exponent = max(0.0, np.log2((window - 1) / (KERNEL_LENGTH - 1))) if window > 1 else 0.0
    drawn = np.logspace(0, max_exponent, n_steps, base=2).astype(np.int64)
    dilations, counts = np.unique(drawn, return_counts=True)
    per_dilation = (counts * multiplier).astype(np.int64)
    remainder = n_features_per_kernel - per_dilation.sum()
    for i in range(remainder):
        per_dilation[i % len(per_dilation)] += 1
    return dilations, per_dilation


def golden_quantiles(n: int) -> np.ndarray:
    """The low-discrepancy quantiles MiniRocket draws biases at: ``frac(k * golden ratio)``."""
    return (np.arange(1, n + 1) * ((np.sqrt(5.0) + 1.0) / 2.0)) % 1.0


def nudged_quantiles(outputs: np.ndarray, quantiles: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Quantiles moved into the nearest gap between distinct values.

    Parameters
    ----------
    outputs : ndarray, shape (K, T)
        One convolution output per row.
    quantiles : ndarray, shape (K, F)
        Wanted quantiles in ``[0, 1]`` per row.
    tol : ndarray, shape (K,)
        Values closer than this are one value (a run); a gap is a step larger than ``tol``.

    Returns
    -------
    ndarray of float64, shape (K, F)
        For each wanted quantile, a point of the gap nearest to it in rank (near the classic
        interpolated quantile, moved at most to the edge of the run it falls in), at
        ``GAP_SPLIT`` of the way from the lower to the upper value. A row without
        any gap (a constant output) gets its value plus or minus ``tol``, by the quantile's side.
    """
    s = np.sort(np.asarray(outputs, dtype=np.float64), axis=1)
    k, t = s.shape
    q = np.asarray(quantiles, dtype=np.float64)
    pos = q * (t - 1)
    if t < 2:
        return s[:, :1] + np.where(q >= 0.5, 1.0, -1.0) * tol[:, None]
    gap = np.diff(s, axis=1) > tol[:, None]  # gap g lies between s[g] and s[g + 1]
    idx = np.arange(t - 1)
    prev = np.maximum.accumulate(np.where(gap, idx, -1), axis=1)  # last gap <= i
    nxt = np.minimum.accumulate(np.where(gap, idx, t)[:, ::-1], axis=1)[:, ::-1]  # first gap >= i
    i = np.clip(np.floor(pos).astype(np.int64), 0, t - 2)
    rows = np.arange(k)[:, None]
    g_prev, g_next = prev[rows, i], nxt[rows, i]
    d_prev = np.where(g_prev >= 0, np.abs(g_prev + 0.5 - pos), np.inf)
    d_next = np.where(g_next < t, np.abs(g_next + 0.5 - pos), np.inf)
    g = np.where(d_prev <= d_next, g_prev, g_next)
    has_gap = np.isfinite(np.minimum(d_prev, d_next))
    g = np.clip(g, 0, t - 2)
    inside = s[rows, g] + GAP_SPLIT * (s[rows, g + 1] - s[rows, g])
    flat = s[:, :1] + np.where(q >= 0.5, 1.0, -1.0) * tol[:, None]
    return np.where(has_gap, inside, flat)


class KernelBank:
    """The 84 kernels at every dilation over one input series (the window or its difference).

    Built by :class:`ConvFeatures`; holds what ``fit`` learned for that series.

    Attributes
    ----------
    dilations : ndarray of int
        Dilations used.
    features_per_dilation : ndarray of int
        Biases per kernel at each dilation.
    channel_mask : ndarray of bool, shape (n_dilations, 84, C)
        The channels each kernel/dilation pair sums over.
    padded : ndarray of bool, shape (n_dilations, 84)
        True where the pair is zero-padded to the full length, False where it uses only
        the positions where the kernel fits.
    biases : list of ndarray of float32, shape (84, F_d)
        Biases per dilation, one row per kernel.
    center : ndarray of float32, shape (C,)
        Training mean per channel, subtracted first (zeros for a difference).
    stride : int
        PPV counts positions ``0, s, 2s, ...`` only (1: all; a pruned pool on a long
        window, see :data:`POOL_POSITIONS`). The grid is the window's, so the window and
        its difference, padded and unpadded kernels, all count on the same positions.
    """

    def __init__(self, x: np.ndarray, per_kernel: int, max_dilations: int,
                 rng: np.random.Generator, centre: bool = True, stride: int = 1):
        n, w, c = x.shape
        self.stride, self.window = int(stride), w
        self.dilations, self.features_per_dilation = fit_dilations(w, per_kernel, max_dilations)
        n_dil = len(self.dilations)
        # A difference needs no centring (its offset is gone already); centring it would turn
        # its exact zeros on flat segments into a shared constant near the padded edges.
        self.center = (x.mean(axis=(0, 1), dtype=np.float64) if centre else np.zeros(c))
        self.center = self.center.astype(np.float32)
        xc = x - self.center

        # Multivariate MiniRocket: 1..min(C, 9) channels per kernel/dilation, log-uniform.
        n_channels = (2 ** rng.uniform(0, np.log2(min(c, 9) + 1), size=(n_dil, N_KERNELS)))
        self.channel_mask = np.zeros((n_dil, N_KERNELS, c), dtype=bool)
        for i in range(n_dil):
            for k in range(N_KERNELS):
                chosen = rng.choice(c, int(n_channels[i, k]), replace=False)
                self.channel_mask[i, k, chosen] = True
        # Alternate padding over kernels and dilations as the paper does; a series too short
        # for an unpadded kernel falls back to padding.
        parity = (np.arange(n_dil)[:, None] + np.arange(N_KERNELS)[None, :]) % 2 == 0
        half = (KERNEL_LENGTH // 2) * self.dilations
        fits = (first_position(half, self.stride) < w - half)[:, None]
        self.padded = parity | ~fits

        quantiles = golden_quantiles(N_KERNELS * per_kernel)
        examples = rng.integers(n, size=(n_dil, N_KERNELS))
        self.biases = []
        start = 0
        for i, d in enumerate(self.dilations):
            f = int(self.features_per_dilation[i])
            weights = self.weights(i).astype(np.float64)  # [C*9, 84]
            taps = _taps(xc[examples[i]], int(d)).reshape(N_KERNELS, w, c * KERNEL_LENGTH)
            taps = taps.astype(np.float64)
            # Kernel k on its own random example k: [84, W] (exact enough in float64).
            out = np.einsum("kwf,fk->kw", taps, weights)
            scale = np.einsum("kwf,fk->kw", np.abs(taps), np.abs(weights)).max(axis=1)
            tol = REL_TOL * np.maximum(scale, np.finfo(np.float32).tiny)
            q = quantiles[start : start + N_KERNELS * f].reshape(N_KERNELS, f)
            start += N_KERNELS * f
            self.biases.append(nudged_quantiles(out, q, tol).astype(np.float32))

    @property
    def n_features(self) -> int:
        return N_KERNELS * int(self.features_per_dilation.sum())

    def weights(self, i: int) -> np.ndarray:
        """Kernels of dilation ``i`` as a ``[C*9, 84]`` matrix, zero for channels not summed."""
        w = self.channel_mask[i][:, :, None] * KERNELS[:, None, :]  # [84, C, 9]
        return np.ascontiguousarray(w.reshape(N_KERNELS, -1).T, dtype=np.float32)

    def groups(self, i: int):
        """The padded kernels, then the unpadded ones, of dilation ``i`` (skipping empty ones)."""
        for padded in (True, False):
            kernels = np.flatnonzero(self.padded[i] == padded)
            if kernels.size:
                yield padded, kernels

    def conv(self, xc: np.ndarray, i: int) -> np.ndarray:
        """Outputs ``[N, T', 84]`` float32 of dilation ``i`` over centred series ``xc``, at
        the positions the PPV counts (``T' = ceil(T / stride)``: a strided pool's convolution
        is computed where it is counted only, as its exported graph's strided ``Conv`` is).

        The stacked matmul this family has always used: another layout (time last, or a
        different number of windows per call) can round some outputs differently in the
        last bit, and a bias comparison could flip on that.
        """
        n, w, c = xc.shape
        taps = _taps(xc, int(self.dilations[i]))
        if self.stride > 1:
            taps = taps[:, ::self.stride]
        return taps.reshape(n, taps.shape[1], c * KERNEL_LENGTH) @ self.weights(i)

    def ppv(self, conv: np.ndarray, i: int) -> np.ndarray:
        """PPV features ``[N, 84 * F_i]`` of dilation ``i`` from its outputs ``conv``
        (:meth:`conv`'s, for series of ``window`` samples).

        In ``transform`` order (padded kernels, then unpadded ones, each followed by its
        biases). Time stays the middle axis: each bias column is one comparison of the
        whole ``[N, T, 84]`` block and one sum over time, with no transposed copy (the
        counts are exact integers, so the features do not depend on how they are summed).
        """
        n, w, s = conv.shape[0], self.window, self.stride
        counted = conv  # already at the counted positions 0, s, 2s, ... only
        # Unpadded kernels count the positions in [pad, w - pad): indices lo..hi-1 of those.
        pad = (KERNEL_LENGTH // 2) * int(self.dilations[i])
        lo, hi = first_position(pad, s) // s, -(-(w - pad) // s)
        biases = self.biases[i]
        unpadded = ~self.padded[i]
        total = np.empty((n, N_KERNELS, biases.shape[1]), np.int32)
        inner = np.empty_like(total) if unpadded.any() else None
        above = np.empty(counted.shape, dtype=bool)
        for j in range(biases.shape[1]):
            np.greater(counted, biases[:, j], out=above)
            if inner is None:
                total[:, :, j] = above.sum(axis=1, dtype=np.int32)
                continue
            # An unpadded kernel fits, so lo < hi: the edges and the middle are disjoint.
            inner[:, :, j] = above[:, lo:hi].sum(axis=1, dtype=np.int32)
            total[:, :, j] = (inner[:, :, j] + above[:, :lo].sum(axis=1, dtype=np.int32)
                              + above[:, hi:].sum(axis=1, dtype=np.int32))
        parts = []
        for padded, kernels in self.groups(i):
            counts, length = (total, counted.shape[1]) if padded else (inner, hi - lo)
            ppv = counts[:, kernels].astype(np.float32) / np.float32(length)
            parts.append(ppv.reshape(n, -1))  # kernel-major, then bias
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """PPV features of one chunk of series ``[N, T, C]`` float32."""
        xc = x - self.center if self.center.any() else x
        return np.concatenate([self.ppv(self.conv(xc, i), i)
                               for i in range(len(self.dilations))], axis=1)

    def shares_outputs(self, other: KernelBank) -> bool:
        """True when ``other`` convolves the same series the same way (only its biases may
        differ): e.g. the difference banks of pools fitted on different folds."""
        return (np.array_equal(self.center, other.center)
                and np.array_equal(self.dilations, other.dilations)
                and np.array_equal(self.channel_mask, other.channel_mask))

    def to_onnx(self, g: GraphBuilder, series: str, prefix: str) -> list[str]:
        """Emit the bank over ``series`` ``[batch, T, C]``; return its ``[batch, k]`` outputs."""
        if self.stride != 1:
            raise ValueError("a strided bank is exported through its pruned features")
        c = self.center.shape[0]
        centred = series
        if self.center.any():
            center = g.const(f"{prefix}_channel_mean", self.center.reshape(1, 1, c))
            centred = g.op("Sub", [series, center], name=f"{prefix}_centre")
        x = g.op("Transpose", [centred], name=f"{prefix}_channels_first", perm=[0, 2, 1])
        bias_axis = g.const(f"{prefix}_bias_axis", np.array([2], dtype=np.int64))
        time_axis = g.const(f"{prefix}_time_axis", np.array([3], dtype=np.int64))
        parts = []
        for i, d in enumerate(self.dilations):
            d = int(d)
            pad = (KERNEL_LENGTH // 2) * d
            kernels_all = self.weights(i).reshape(c, KERNEL_LENGTH, N_KERNELS).transpose(2, 0, 1)
            for padded, kernels in self.groups(i):
                tag = f"{prefix}_d{d}_{'same' if padded else 'valid'}"
                weight = g.const(f"{tag}_kernels", kernels_all[kernels])  # [K, C, 9]
                out = g.op(
                    "Conv", [x, weight], name=tag, kernel_shape=[KERNEL_LENGTH],
                    dilations=[d], pads=[pad, pad] if padded else [0, 0],
                )  # [B, K, T]
                biases = self.biases[i][kernels]
                bias = g.const(f"{tag}_biases", biases[:, :, None])  # [K, F, 1]
                out = g.op("Unsqueeze", [out, bias_axis], name=f"{tag}_expand")  # [B, K, 1, T]
                above = g.op("Greater", [out, bias], name=f"{tag}_above_bias")  # [B, K, F, T]
                above = g.op("Cast", [above], name=f"{tag}_as_float", to=TensorProto.FLOAT)
                ppv = g.op("ReduceMean", [above, time_axis], name=f"{tag}_ppv", keepdims=0)
                shape = g.const(f"{tag}_shape", np.array([-1, biases.size], dtype=np.int64))
                parts.append(g.op("Reshape", [ppv, shape], name=f"{tag}_features"))
        return parts

    def feature_names(self, channels: list[str], prefix: str) -> list[str]:
        names = []
        for i, d in enumerate(self.dilations):
            for _, kernels in self.groups(i):
                for k in kernels:
                    mask = self.channel_mask[i, k]
                    chans = "+".join(ch for ch, m in zip(channels, mask, strict=True) if m)
                    f = self.biases[i].shape[1]
                    names += [f"{prefix}_d{d}_k{k}_{chans}_b{j}" for j in range(f)]
        return names


class ConvFeatures:
    """MiniRocket convolutional features: PPV of dilated length-9 kernels against learned biases.

    Parameters
    ----------
    n_features : int, default 1008
        Number of features; rounded down to a multiple of 84 (one per kernel). The default
        (12 per kernel) is sized for a Raspberry Pi: see BENCHMARKS.md for the trade-off.
    diff : bool, default True
        Also convolve the first difference ``x[t+1] - x[t]`` (as MultiRocket does), giving it
        half the features. It measured better on ItalyPowerDemand (0.969 vs 0.966) and costs
        nothing extra at the same feature count.
    max_dilations_per_kernel : int, default 32
        As in the paper.
    random_state : int or None, default None
        Seeds the channel subsets and the training windows biases are drawn from; ``None``
        is seed 0 (a :class:`trainer.pipeline.Pipeline` sets its own seed here). The same
        seed and training windows give the same features.
    pool : int or None, default None
        Draw this many features (rounded down to a multiple of 84; the paper's ~10k is
        10080) and keep only the best of them, chosen with the labels by Sequential
        Feature Detachment (see :mod:`trainer.features.pruned_conv`). ``None``: no pruning,
        ``n_features`` features (then ``keep``, ``tolerance`` and ``budget_us`` are unused).
    keep : "auto" or int, default "auto"
        With ``pool``: ``"auto"`` keeps the smallest set whose cross-validated accuracy is
        within ``tolerance`` of the best; an int keeps that many (no cross-validation).
    tolerance : float, default 0.005
        Accuracy (fraction) ``keep="auto"`` may give up for fewer features.
    budget_us : float or None, default None
        With ``pool``: the kept features' graph must take at most this batch-1 CPU time on
        this machine (timed); ``sigmoid-train fit`` sets it from ``--latency-budget-us``.
    positions : int, default 128
        With ``pool``: each feature's PPV counts every ``s``-th position,
        ``s = max(1, W // positions)`` (see :data:`POOL_POSITIONS`); 0: every position.
        Unused without ``pool``.

    Attributes
    ----------
    banks_ : dict of str to KernelBank
        ``"conv"`` over the window and, with ``diff``, ``"conv_diff"`` over its difference.
    window_, channels_ : int
        Window shape seen in ``fit``.

    Examples
    --------
    >>> conv = ConvFeatures(n_features=168, random_state=1).fit(train_windows)   # doctest: +SKIP
    >>> conv.transform(test_windows).shape                                 # doctest: +SKIP
    (n_test, 168)
    >>> pruned = ConvFeatures(pool=10080, keep="auto").fit(windows, labels)  # doctest: +SKIP
    >>> pruned.pruning_["kept"], pruned.pruning_["validation_accuracy"]   # doctest: +SKIP
    (124, 0.97)
    """

    name = "conv"

    def __init__(
        self,
        n_features: int = DEFAULT_N_FEATURES,
        diff: bool = True,
        max_dilations_per_kernel: int = MAX_DILATIONS_PER_KERNEL,
        random_state: int | None = None,
        pool: int | None = None,
        keep: int | str = "auto",
        tolerance: float = DEFAULT_TOLERANCE,
        budget_us: float | None = None,
        positions: int = POOL_POSITIONS,
    ):
        self.n_features = n_features
        self.diff = diff
        self.max_dilations_per_kernel = max_dilations_per_kernel
        self.random_state = random_state
        self.pool = pool
        self.keep = keep
        self.tolerance = tolerance
        self.budget_us = budget_us
        self.positions = positions

    @property
    def supervised(self) -> bool:
        """True when ``fit`` needs the labels (a pruned pool)."""
        return self.pool is not None

    def fit(self, windows: np.ndarray, y=None, splits=None) -> ConvFeatures:
        """Choose dilations, channel subsets and biases from training windows ``[N, W, C]``.

        With ``pool``, also the kept features: ``y`` (labels) is required, and ``splits``
        (``(train, validation)`` index pairs) are the folds ``keep="auto"`` validates on
        (default: :func:`trainer.selection.folds`).
        """
        if self.pool is not None:
            self._check_pruning()
            from trainer.features.pruned_conv import fit_pruned

            for attr in ("kept_", "pruned_"):
                self.__dict__.pop(attr, None)
            with _one_blas_thread():  # its ridge products too: see _one_blas_thread
                fit_pruned(self, self._check(windows, fitted=False), y, splits)
            return self
        if int(self.n_features) < N_KERNELS:
            raise ValueError(
                f"n_features must be at least {N_KERNELS} (one per kernel), got {self.n_features}"
            )
        if int(self.max_dilations_per_kernel) < 1:
            raise ValueError(
                f"max_dilations_per_kernel must be >= 1, got {self.max_dilations_per_kernel}"
            )
        return self.fit_banks(self._check(windows, fitted=False))

    def fit_banks(self, x: np.ndarray, stride: int = 1) -> ConvFeatures:
        """Fit every feature (no pruning) on checked windows; PPV on every ``stride``-th
        position (a pruned pool's draw, see :func:`pool_stride`)."""
        self.window_, self.channels_ = x.shape[1], x.shape[2]
        rng = np.random.default_rng(0 if self.random_state is None else self.random_state)
        per_kernel = int(self.n_features) // N_KERNELS
        with_diff = bool(self.diff) and per_kernel >= 2 and x.shape[1] >= 2
        raw_share = (per_kernel + 1) // 2 if with_diff else per_kernel
        max_dil = int(self.max_dilations_per_kernel)
        self.banks_ = {"conv": KernelBank(x, raw_share, max_dil, rng, stride=stride)}
        if with_diff:
            self.banks_["conv_diff"] = KernelBank(
                _difference(x), per_kernel - raw_share, max_dil, rng, centre=False,
                stride=stride)
        return self

    def _check_pruning(self) -> None:
        if int(self.n_features) != DEFAULT_N_FEATURES:
            raise ValueError("give conv either n_features (all features) or pool (pruned), "
                             "not both; e.g. 'conv:pool=10080:keep=auto'")
        if int(self.pool) < N_KERNELS:
            raise ValueError(f"pool must be at least {N_KERNELS} features, got {self.pool}")
        if self.keep != "auto" and not (isinstance(self.keep, int) and self.keep >= 1):
            raise ValueError(f"keep must be 'auto' or a positive number of features, "
                             f"got {self.keep!r}")
        if not 0 <= float(self.tolerance) < 1:
            raise ValueError(f"tolerance must be in [0, 1), got {self.tolerance}")
        if not (isinstance(self.positions, int) and self.positions >= 0):
            raise ValueError(f"positions must be a whole number >= 0 (0: every position), "
                             f"got {self.positions!r}")

    def transform(self, windows: np.ndarray) -> np.ndarray:
        """Features float32 ``[N, n_features_out_]`` of windows ``[N, W, C]``."""
        x = self._check(windows, fitted=True)
        if not hasattr(self, "pruned_"):
            return transform_pools([self], x)[0]
        n, w, c = x.shape
        out = np.empty((n, self.n_features_out_), dtype=np.float32)
        chunk = max(1, _CHUNK_ELEMENTS // (w * c * KERNEL_LENGTH))
        with _one_blas_thread():
            for lo in range(0, n, chunk):
                out[lo : lo + chunk] = self.pruned_.transform(x[lo : lo + chunk])
        return out

    @staticmethod
    def transform_pools(families: list[ConvFeatures], windows: np.ndarray) -> list[np.ndarray]:
        """:func:`transform_pools` (reached through the class by the pruning, which must not
        import this module: it imports the pruning)."""
        return transform_pools(families, windows)

    def to_onnx(self, g: GraphBuilder, window: str) -> str:
        """Emit the same computation as ONNX nodes reading ``window`` ``[batch, W, C]``.

        Per bank and dilation: Conv (dilated, padded or not) > biases, Cast, ReduceMean over
        time. Returns the name of a float32 ``[batch, n_features_out_]`` tensor.
        """
        self._check_fitted()
        if hasattr(self, "pruned_"):
            return g.op("Identity", [self.pruned_.to_onnx(g, window)], name="conv_features")
        parts = self.banks_["conv"].to_onnx(g, window, "conv")
        if "conv_diff" in self.banks_:
            w = self.window_
            axis = g.const("conv_diff_axis", np.array([1], dtype=np.int64))
            later = g.op("Slice", [window, g.const("conv_diff_one", np.array([1], np.int64)),
                                   g.const("conv_diff_end", np.array([w], np.int64)), axis],
                         name="conv_diff_later")
            earlier = g.op("Slice", [window, g.const("conv_diff_zero", np.array([0], np.int64)),
                                     g.const("conv_diff_last", np.array([w - 1], np.int64)), axis],
                           name="conv_diff_earlier")
            diff = g.op("Sub", [later, earlier], name="conv_diff_series")
            parts += self.banks_["conv_diff"].to_onnx(g, diff, "conv_diff")
        if len(parts) == 1:
            return g.op("Identity", parts, name="conv_features")
        return g.op("Concat", parts, name="conv_features", axis=1)

    def feature_names(self, channels: list[str]) -> list[str]:
        """Names like ``conv_d3_k17_x+z_b2``: bank, dilation, kernel, channels summed, bias."""
        self._check_fitted()
        if len(channels) != self.channels_:
            raise ValueError(f"expected {self.channels_} channel names, got {len(channels)}")
        names = []
        for prefix, bank in self.banks_.items():
            names += bank.feature_names(list(channels), prefix)
        if hasattr(self, "kept_"):
            names = [names[i] for i in self.kept_]
        return names

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for model metadata and reports."""
        self._check_fitted()
        pruned = {}
        if hasattr(self, "pruned_"):
            from trainer.features.pruned_conv import pruned_description

            pruned = {"pruning": pruned_description(self)}
        return {
            "family": self.name,
            "recipe": "MiniRocket (Dempster et al. 2021), multivariate, PPV, nudged biases",
            "n_features": self.n_features_out_,
            "diff": "conv_diff" in self.banks_,
            "random_state": self.random_state,
            "window": int(self.window_),
            "channels": int(self.channels_),
            "stride": int(self.banks_["conv"].stride),
            "banks": {
                prefix: {
                    "dilations": [int(d) for d in bank.dilations],
                    "features_per_dilation": [int(f) for f in bank.features_per_dilation],
                }
                for prefix, bank in self.banks_.items()
            },
            **pruned,
        }

    @property
    def n_features_out_(self) -> int:
        """Number of features ``transform`` returns (a multiple of 84 unless pruned)."""
        self._check_fitted()
        if hasattr(self, "kept_"):
            return len(self.kept_)
        return sum(bank.n_features for bank in self.banks_.values())

    def _check_fitted(self) -> None:
        if not hasattr(self, "banks_"):
            raise RuntimeError("ConvFeatures is not fitted yet; call fit(windows) first")

    def _check(self, windows: np.ndarray, fitted: bool) -> np.ndarray:
        x = np.asarray(windows)
        if x.ndim != 3:
            raise ValueError(f"windows must be [N, window, channels], got shape {x.shape}")
        if 0 in x.shape:
            raise ValueError(f"windows must not be empty, got shape {x.shape}")
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise ValueError("windows contain NaN or infinite values; fill or drop them first")
        if fitted:
            self._check_fitted()
            if x.shape[1:] != (self.window_, self.channels_):
                raise ValueError(
                    f"windows have shape [*, {x.shape[1]}, {x.shape[2]}] but the features were "
                    f"fitted on [*, {self.window_}, {self.channels_}]"
                )
        return x


def transform_pools(families: list[ConvFeatures], windows: np.ndarray) -> list[np.ndarray]:
    """``[f.transform(windows) for f in families]`` for fitted, unpruned families, faster.

    Banks that convolve the same series with the same kernels (:meth:`KernelBank.
    shares_outputs`; e.g. the difference banks of one pool fitted on each
    cross-validation fold: no centring, the same channel subsets) compute each dilation's
    convolution once and compare it with each family's own biases. The features are
    exactly those of each family's ``transform``.
    """
    x = families[0]._check(windows, fitted=True)
    for f in families:
        f._check(x[:1], fitted=True)
        if hasattr(f, "pruned_"):
            raise ValueError("transform_pools takes unpruned families")
    n, w, c = x.shape
    outs = [np.empty((n, f.n_features_out_), dtype=np.float32) for f in families]
    # The chunks ``transform`` has always used: numpy may run a chunk's stacked product as
    # one GEMM, whose last-bit rounding can depend on the number of rows.
    chunk = max(1, _CHUNK_ELEMENTS // (w * c * KERNEL_LENGTH))
    # Per bank name: groups of (family index, bank, first column) whose outputs are shared.
    groups: dict[str, list[list[tuple[int, KernelBank, int]]]] = {}
    for k, f in enumerate(families):
        start = 0
        for prefix, bank in f.banks_.items():
            same = groups.setdefault(prefix, [])
            group = next((g for g in same if g[0][1].shares_outputs(bank)), None)
            if group is None:
                same.append(group := [])
            group.append((k, bank, start))
            start += bank.n_features
    with _one_blas_thread():
        for lo in range(0, n, chunk):
            xs = x[lo : lo + chunk]
            for prefix, same in groups.items():
                series = xs if prefix == "conv" else _difference(xs)
                for group in same:
                    first = group[0][1]
                    xc = series - first.center if first.center.any() else series
                    cols = [start for _, _, start in group]
                    for i in range(len(first.dilations)):
                        conv = first.conv(xc, i)
                        for m, (k, bank, _) in enumerate(group):
                            ppv = bank.ppv(conv, i)
                            outs[k][lo : lo + chunk, cols[m] : cols[m] + ppv.shape[1]] = ppv
                            cols[m] += ppv.shape[1]
    return outs


def _one_blas_thread():
    """One BLAS thread for the convolutions and the pruning's ridge: the GEMMs are skinny
    (9 x C taps; a few hundred windows), threads gain little on them, and on a busy machine
    spinning BLAS threads cost 10-40x the CPU time (ACSF1's pool: 3.1 s against 0.08 s of
    CPU for the same products). It also makes the features the same on every machine:
    OpenBLAS splits a product by rows across its threads, and the split can change the
    last bit of an output (4 of ACSF1's 1,008,000 pool features moved by 1/1460).
    """
    from trainer.network import _one_blas_thread as one_thread

    return one_thread()


def _difference(x: np.ndarray) -> np.ndarray:
    """First difference along time in float32, the same IEEE subtraction as the graph's Sub."""
    return x[:, 1:] - x[:, :-1]
