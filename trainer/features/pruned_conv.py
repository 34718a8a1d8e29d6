"""A pruned MiniRocket pool: fit (Detach-ROCKET style), numpy transform and ONNX export.

:class:`trainer.features.conv.ConvFeatures` with ``pool=`` draws a large MiniRocket pool
(default 10,080 features, the paper's ~10k) and keeps few of them; this module holds what
that needs:

- :func:`fit_pruned`: the pool is fitted *inside each cross-validation fold* (dilations,
  channel subsets, biases and centring from the fold's training windows only), its
  features are detached step by step with a ridge classifier
  (:mod:`trainer.features.pruning`), and the validation accuracy of every step is averaged
  over the folds. The pool is then fitted on all training windows and detached once more
  with the same schedule; the kept set is the smallest whose cross-validated accuracy is
  within ``tolerance`` of the best, among the sizes whose exported graph fits
  ``budget_us`` (timed, batch 1, thread CPU time, as the selection's budget is).
- :class:`PrunedBank`: the kept features of one kernel bank. Per dilation ONE ``Conv``
  over just the kernels still in use, reading just the channels some kept kernel sums (one
  ``Gather`` picks them), all zero-padded; the outputs of every dilation are concatenated, each kept
  feature picks its kernel's row (``Gather``), compares it with its bias (``Greater``,
  ``Cast``) and averages over time. Features of unpadded kernels average over the
  positions where the kernel fits (a constant 0/1 mask, ``ReduceSum`` times 1/count):
  the same numbers as a Conv without padding. The cost is the kept kernels' convolutions
  plus ``kept features x W`` comparisons, whatever the pool size.
"""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Any

import numpy as np
from onnx import TensorProto

from trainer.features import pruning
from trainer.graph import GraphBuilder

log = logging.getLogger(__name__)


class PrunedBank:
    """The kept features of one :class:`~trainer.features.conv.KernelBank`.

    Parameters
    ----------
    bank : KernelBank
        The fitted pool bank.
    kept : ndarray of int
        Indices (sorted) into the bank's features, in its ``transform`` order.
    length : int
        Samples of the series the bank reads (the window, or one less for a difference).
    """

    def __init__(self, bank, kept: np.ndarray, length: int):
        from trainer.features.conv import KERNEL_LENGTH

        self.bank, self.kept, self.length = bank, np.asarray(kept, np.int64), int(length)
        dil, ker, col, padded = feature_table(bank)
        d_k, k_k = dil[self.kept], ker[self.kept]
        self.plan: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        rows = np.empty(len(self.kept), np.int64)
        offset = 0
        for i in np.unique(d_k):
            sel = d_k == i
            kernels = np.unique(k_k[sel])
            channels = np.flatnonzero(bank.channel_mask[i, kernels].any(axis=0))
            self.plan.append((int(i), int(bank.dilations[i]), kernels, channels))
            rows[sel] = offset + np.searchsorted(kernels, k_k[sel])
            offset += len(kernels)
        self.rows = rows
        self.channels = np.flatnonzero(np.any(
            [bank.channel_mask[i, kernels].any(axis=0) for i, _, kernels, _ in self.plan],
            axis=0)).astype(np.int64)
        self.identity_rows = bool(np.array_equal(rows, np.arange(offset)))
        self.biases = np.array([bank.biases[d][k, j] for d, k, j in
                                zip(d_k, k_k, col[self.kept], strict=True)], np.float32)
        # Unpadded kernels count only the positions where the whole kernel fits.
        half = (KERNEL_LENGTH // 2) * bank.dilations[d_k]
        lo = np.where(padded[self.kept], 0, half)
        t = np.arange(self.length)
        self.mask = ((t >= lo[:, None]) & (t < self.length - lo[:, None])).astype(np.float32)
        self.all_padded = bool(self.mask.all())
        self.inv_count = (np.float32(1.0) / self.mask.sum(axis=1)).astype(np.float32)

    @property
    def n_features(self) -> int:
        return len(self.kept)

    def weights(self, i: int, kernels: np.ndarray, channels: np.ndarray) -> np.ndarray:
        """Kernels ``[K, C', 9]`` of dilation ``i`` over the channels in use."""
        from trainer.features.conv import KERNELS

        mask = self.bank.channel_mask[i][np.ix_(kernels, channels)]
        return (mask[:, :, None] * KERNELS[kernels][:, None, :]).astype(np.float32)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Kept PPV features ``[N, k]`` of series ``[N, T, C]`` float32."""
        from trainer.features.conv import _taps

        center = self.bank.center
        xc = x - center if center.any() else x
        n, w, _ = xc.shape
        xc = xc[:, :, self.channels] if len(self.channels) < xc.shape[2] else xc
        convs = []
        for i, d, kernels, _ in self.plan:
            taps = _taps(xc, d).reshape(n, w, -1)
            weight = self.weights(i, kernels, self.channels).reshape(len(kernels), -1).T
            convs.append(taps @ np.ascontiguousarray(weight))  # [N, T, K]
        out = convs[0] if len(convs) == 1 else np.concatenate(convs, axis=2)
        if not self.identity_rows:
            out = out[:, :, self.rows]
        above = out > self.biases
        if self.all_padded:
            return above.mean(axis=1, dtype=np.float32)
        return (above * self.mask.T).sum(axis=1, dtype=np.float32) * self.inv_count

    def to_onnx(self, g: GraphBuilder, series: str, prefix: str) -> str:
        """Emit the kept features of ``series`` ``[batch, T, C]``; return ``[batch, k]``."""
        from trainer.features.conv import KERNEL_LENGTH

        c = self.bank.center.shape[0]
        centred = series
        if self.bank.center.any():
            center = g.const(f"{prefix}_channel_mean", self.bank.center.reshape(1, 1, c))
            centred = g.op("Sub", [series, center], name=f"{prefix}_centre")
        x = g.op("Transpose", [centred], name=f"{prefix}_channels_first", perm=[0, 2, 1])
        # One Gather of the channels any kept kernel reads (none when all are read): a node
        # per dilation would cost more than the few zero weights it saves.
        if len(self.channels) < c:
            index = g.const(f"{prefix}_channels", self.channels)
            x = g.op("Gather", [x, index], name=f"{prefix}_channels_in_use", axis=1)
        outs = []
        for i, d, kernels, _ in self.plan:
            weight = g.const(f"{prefix}_d{d}_kernels",
                             self.weights(i, kernels, self.channels))
            pad = (KERNEL_LENGTH // 2) * d
            outs.append(g.op("Conv", [x, weight], name=f"{prefix}_d{d}",
                             kernel_shape=[KERNEL_LENGTH], dilations=[d], pads=[pad, pad]))
        out = outs[0] if len(outs) == 1 else g.op("Concat", outs, name=f"{prefix}_convs", axis=1)
        if not self.identity_rows:
            rows = g.const(f"{prefix}_rows", self.rows)
            out = g.op("Gather", [out, rows], name=f"{prefix}_kept_rows", axis=1)
        bias = g.const(f"{prefix}_biases", self.biases[:, None])  # [k, 1]
        above = g.op("Greater", [out, bias], name=f"{prefix}_above_bias")
        above = g.op("Cast", [above], name=f"{prefix}_as_float", to=TensorProto.FLOAT)
        time_axis = g.const(f"{prefix}_time_axis", np.array([2], np.int64))
        if self.all_padded:
            return g.op("ReduceMean", [above, time_axis], name=f"{prefix}_ppv", keepdims=0)
        inside = g.op("Mul", [above, g.const(f"{prefix}_fits", self.mask)],
                      name=f"{prefix}_where_kernel_fits")
        total = g.op("ReduceSum", [inside, time_axis], name=f"{prefix}_count", keepdims=0)
        return g.op("Mul", [total, g.const(f"{prefix}_inv_count", self.inv_count)],
                    name=f"{prefix}_ppv")


def feature_table(bank) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per feature of a bank, in ``transform`` order: dilation index, kernel, bias, padded."""
    dil, ker, col, pad = [], [], [], []
    for i in range(len(bank.dilations)):
        f = bank.biases[i].shape[1]
        for padded, kernels in bank.groups(i):
            dil.append(np.full(len(kernels) * f, i))
            ker.append(np.repeat(kernels, f))
            col.append(np.tile(np.arange(f), len(kernels)))
            pad.append(np.full(len(kernels) * f, padded))
    return tuple(np.concatenate(a) for a in (dil, ker, col, pad))


def prune_banks(banks: dict, kept: np.ndarray, lengths: dict[str, int]) -> dict:
    """Split global kept indices (pool order: bank after bank) into one PrunedBank each."""
    out, start = {}, 0
    for prefix, bank in banks.items():
        local = kept[(kept >= start) & (kept < start + bank.n_features)] - start
        start += bank.n_features
        if local.size:
            out[prefix] = PrunedBank(bank, local, lengths[prefix])
    return out


def fit_pruned(family, x: np.ndarray, y, splits=None) -> None:
    """Fit ``family`` (a ConvFeatures with ``pool``): pool, detachment, kept features.

    Sets ``banks_`` (the pool fitted on all windows), ``kept_``, ``pruned_``, ``pruning_``
    (the record for report.json) and ``fold_features_`` (per split, the training and
    validation features of that fold's own kept set at the chosen size, for the
    selection's cross-validation of the network on top).
    """
    from trainer.features.conv import ConvFeatures

    if y is None:
        raise ValueError("conv:pool=... chooses its features with the labels: "
                         "fit(windows, y) (the pipeline passes them)")
    y = np.asarray(y)
    if len(y) != len(x):
        raise ValueError(f"got {len(x)} windows but {len(y)} labels")
    classes, codes = np.unique(y, return_inverse=True)
    n_classes = len(classes)
    seed = 0 if family.random_state is None else int(family.random_state)
    keep = family.keep

    def pool_family() -> ConvFeatures:
        return ConvFeatures(n_features=int(family.pool), diff=family.diff,
                            max_dilations_per_kernel=family.max_dilations_per_kernel,
                            random_state=seed)

    full = pool_family().fit(x)
    pool = full.n_features_out_
    if keep != "auto" and int(keep) > pool:
        raise ValueError(f"keep={keep} is more than the pool of {pool} features")
    min_keep = pruning.MIN_KEEP if keep == "auto" else int(keep)
    sizes = pruning.schedule(pool, min_keep=min(min_keep, pool))

    folds_out = []
    curve = None
    if keep == "auto":
        if splits is None:
            from trainer.selection import folds

            splits = folds(y, seed)
        accs = []
        for tr, va in splits:
            fold_pool = pool_family().fit(x[tr])
            F = fold_pool.transform(x)
            removed, acc, _ = pruning.detach(F[tr], codes[tr], n_classes, sizes,
                                             F[va], codes[va], seed=seed)
            accs.append(acc)
            folds_out.append((removed, F[tr], F[va]))
        curve = np.mean(accs, axis=0)
        smoothed = pruning.smooth(curve)

    F = full.transform(x)
    removed, _, rel = pruning.detach(F, codes, n_classes, sizes, seed=seed)
    del F
    family.banks_ = full.banks_
    family.window_, family.channels_ = full.window_, full.channels_

    latencies: dict[int, float] = {}
    first_allowed = 0
    if family.budget_us:
        first_allowed = _first_within_budget(family, x[0], removed, sizes,
                                             float(family.budget_us), latencies)
    if curve is None:
        step = len(sizes) - 1
    else:
        step = pruning.choose_step(smoothed, float(family.tolerance), first_allowed, sizes,
                                   int(np.ceil(pruning.MIN_AUTO_SHARE * pool)))
    _set_kept(family, np.flatnonzero(removed > step))
    family.fold_features_ = [
        (Ftr[:, r > step], Fva[:, r > step]) for r, Ftr, Fva in folds_out]
    family.pruning_ = {
        "method": "Sequential Feature Detachment (Detach-ROCKET): ridge on standardized "
                  f"features, {pruning.DROP_FRACTION:.0%} of the remaining detached per step",
        "pool": int(pool),
        "kept": int(sizes[step]),
        "keep": keep,
        "tolerance": float(family.tolerance),
        "relative_alpha": rel,
        "folds": len(splits) if curve is not None else 0,
        "budget_us": float(family.budget_us) if family.budget_us else None,
        "largest_within_budget": int(sizes[first_allowed]),
        "steps": [
            {"n_features": int(n),
             **({"validation_accuracy": round(float(curve[s]), 4),
                 "smoothed_accuracy": round(float(smoothed[s]), 4)} if curve is not None
                else {}),
             **({"batch1_latency_us": round(latencies[s], 1)} if s in latencies else {})}
            for s, n in enumerate(sizes)],
        "chosen_step": int(step),
    }
    if curve is not None:
        family.pruning_["validation_accuracy"] = round(float(curve[step]), 4)
    family.pruning_["batch1_latency_us"] = round(
        latencies[step] if step in latencies else features_latency_us(family, x[0]), 1)


def _set_kept(family, kept: np.ndarray) -> None:
    family.kept_ = np.asarray(kept, np.int64)
    lengths = {"conv": family.window_, "conv_diff": family.window_ - 1}
    family.pruned_ = prune_banks(family.banks_, family.kept_, lengths)


def features_latency_us(family, window: np.ndarray) -> float:
    """Batch-1 thread CPU time (us) of the family's own exported graph."""
    from trainer import quantize
    from trainer.graph import float_input

    g = GraphBuilder("conv_latency_probe")
    out = g.rename(family.to_onnx(g, "window"), "features")
    model = g.model([float_input("window", ["batch", family.window_, family.channels_])],
                    [float_input(out, ["batch", family.n_features_out_])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize.cpu_latency_us(quantize.session(model), window, calls=20, repeats=3)


def _first_within_budget(family, window, removed, sizes, budget: float,
                         latencies: dict[int, float]) -> int:
    """The first step (largest size) whose graph fits ``budget``: a binary search.

    Cost grows with the features kept, so the steps that fit form a tail of the schedule.
    When even the last does not fit, the last is returned (with a warning).
    """
    probe = copy.copy(family)

    def latency(step: int) -> float:
        if step not in latencies:
            _set_kept(probe, np.flatnonzero(removed > step))
            latencies[step] = features_latency_us(probe, window)
        return latencies[step]

    lo, hi = 0, len(sizes) - 1
    if latency(hi) > budget:
        log.warning("even %d pruned conv features take %.0f us (budget %g us)",
                    sizes[hi], latencies[hi], budget)
        return hi
    while lo < hi:
        mid = (lo + hi) // 2
        if latency(mid) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return lo


def pruned_description(family) -> dict[str, Any]:
    """The metadata summary of a pruned family (the full curve is in report.json)."""
    p = family.pruning_
    return {"pool": p["pool"], "kept": p["kept"], "keep": p["keep"],
            "kept_per_bank": {k: b.n_features for k, b in family.pruned_.items()},
            "validation_accuracy": p.get("validation_accuracy"),
            "budget_us": p["budget_us"]}
