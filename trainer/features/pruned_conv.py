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
  ``budget_us`` (timed, batch 1, thread CPU time, as the selection's budget is). When a
  larger size than the budget allows validates better (the budget binds), the largest
  size that fits.
- :class:`PrunedConv`: the kept features. The window and its first difference are stacked
  as channels; per dilation ONE ``Conv`` over just the kernels still in use (of both
  series), reading just the channels some kept kernel sums (one ``Gather`` picks them), all
  zero-padded; the outputs of every dilation are concatenated, each kept
  feature picks its kernel's row (``Gather``), compares it with its bias (``Greater``,
  ``Cast``) and averages over time. Features of unpadded kernels average over the
  positions where the kernel fits (a constant 0/1 mask, ``ReduceSum`` times 1/count):
  the same numbers as a Conv without padding. The cost is the kept kernels' convolutions
  plus ``kept features x W`` comparisons, whatever the pool size.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from typing import Any

import numpy as np
from onnx import TensorProto

from trainer.features import pruning
from trainer.features.kernels import KERNEL_LENGTH, KERNELS, pool_stride, taps
from trainer.graph import GraphBuilder

log = logging.getLogger(__name__)


class PrunedConv:
    """The kept features of a pool's banks, computed on one stacked series.

    The window (centred like the pool's ``conv`` bank) and its first difference (with a
    zero appended, so both have ``W`` samples) are stacked as ``2C`` channels; a kernel of
    the difference bank reads only difference channels. The appended zero is exactly the
    zero padding the difference bank's convolution would read there, and no feature
    counts that last position, so every feature equals the pool's. Stacking lets one
    ``Conv`` per dilation serve both banks: on a Pi each node costs about a microsecond
    whatever its size, and most of a small model's time is nodes.

    Parameters
    ----------
    banks : dict of str to KernelBank
        The fitted pool (``"conv"`` and optionally ``"conv_diff"``).
    kept : ndarray of int
        Sorted indices into the pool's features (``transform`` order: bank after bank).
    window : int
        Samples per window.
    """

    def __init__(self, banks: dict, kept: np.ndarray, window: int):
        self.banks, self.window = banks, int(window)
        self.kept = np.asarray(kept, np.int64)
        # Every bank of a pool counts on the same grid of positions (KernelBank.stride).
        self.stride = next(iter(banks.values())).stride
        c = next(iter(banks.values())).channel_mask.shape[2]
        self.n_channels = c
        bank_of, dil_of, ker_of, mask_of, bias_of, lo_of, len_of = [], [], [], [], [], [], []
        start = 0
        for b, (prefix, bank) in enumerate(banks.items()):
            local = self.kept[(self.kept >= start) & (self.kept < start + bank.n_features)]
            local = local - start
            start += bank.n_features
            dil, ker, col, padded = feature_table(bank)
            d_i, k_i = dil[local], ker[local]
            length = self.window if prefix == "conv" else self.window - 1
            mask = np.zeros((len(local), 2 * c), bool)
            mask[:, b * c:(b + 1) * c] = bank.channel_mask[d_i, k_i]
            bank_of.append(np.full(len(local), b))
            dil_of.append(bank.dilations[d_i])
            ker_of.append(k_i)
            mask_of.append(mask)
            bias_of.append([bank.biases[d][k, j] for d, k, j in
                            zip(d_i, k_i, col[local], strict=True)])
            half = (KERNEL_LENGTH // 2) * bank.dilations[d_i]
            lo_of.append(np.where(padded[local], 0, half))
            len_of.append(np.full(len(local), length))
        self.bank_of = np.concatenate(bank_of)
        dil = np.concatenate(dil_of).astype(np.int64)
        ker = np.concatenate(ker_of)
        cmask = np.concatenate(mask_of)
        self.biases = np.concatenate([np.asarray(b, np.float32) for b in bias_of])
        self.uses_diff = bool((self.bank_of == 1).any())
        # Stacked channels any kept kernel reads (the rest are never computed).
        self.channels = np.flatnonzero(cmask.any(axis=0)).astype(np.int64)
        cmask = cmask[:, self.channels]
        # One Conv per dilation value; its rows are the distinct (bank, kernel, channels).
        self.plan: list[tuple[int, np.ndarray]] = []  # (dilation, [R, C', 9] weights)
        rows = np.empty(len(self.kept), np.int64)
        offset = 0
        for d in np.unique(dil):
            sel = np.flatnonzero(dil == d)
            key = np.concatenate([self.bank_of[sel, None], ker[sel, None], cmask[sel]], axis=1)
            uniq, inverse = np.unique(key, axis=0, return_inverse=True)
            weights = uniq[:, 2:, None] * KERNELS[uniq[:, 1]][:, None, :]
            self.plan.append((int(d), weights.astype(np.float32)))
            rows[sel] = offset + inverse.ravel()
            offset += len(uniq)
        self.rows = rows
        self.identity_rows = bool(np.array_equal(rows, np.arange(offset)))
        lo, length = np.concatenate(lo_of), np.concatenate(len_of)
        t = np.arange(0, self.window, self.stride)  # the positions the strided Conv outputs
        self.mask = ((t >= lo[:, None]) & (t < (length - lo)[:, None])).astype(np.float32)
        self.all_counted = bool(self.mask.all())
        self.inv_count = (np.float32(1.0) / self.mask.sum(axis=1)).astype(np.float32)

    @property
    def n_features(self) -> int:
        return len(self.kept)

    def per_bank(self) -> dict[str, int]:
        """Kept features per pool bank."""
        return {prefix: int((self.bank_of == b).sum()) for b, prefix in enumerate(self.banks)}

    def stacked(self, x: np.ndarray) -> np.ndarray:
        """numpy twin of the graph's stacked series ``[N, W, C']`` (channels in use)."""
        center = self.banks["conv"].center
        parts = [x - center if center.any() else x]
        if self.uses_diff:
            step = x[:, 1:] - x[:, :-1]
            parts.append(np.concatenate([step, np.zeros_like(x[:, :1])], axis=1))
        else:
            parts.append(np.zeros_like(x))  # never read: no diff channel is in use
        return np.concatenate(parts, axis=2)[:, :, self.channels]

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Kept PPV features ``[N, k]`` of windows ``[N, W, C]`` float32."""
        s = self.stacked(x)
        n, w, _ = s.shape
        convs = [taps(s, d)[:, ::self.stride].reshape(n, -(-w // self.stride), -1)
                 @ np.ascontiguousarray(weights.reshape(len(weights), -1).T)
                 for d, weights in self.plan]  # [N, T / stride, R_d] each
        out = convs[0] if len(convs) == 1 else np.concatenate(convs, axis=2)
        if not self.identity_rows:
            out = out[:, :, self.rows]
        above = np.ascontiguousarray(out.transpose(0, 2, 1)) > self.biases[:, None]
        if self.all_counted:
            return above.mean(axis=2, dtype=np.float32)
        return (above * self.mask).sum(axis=2, dtype=np.float32) * self.inv_count

    def to_onnx(self, g: GraphBuilder, window: str, prefix: str = "conv") -> str:
        """Emit the kept features of ``window`` ``[batch, W, C]``; return ``[batch, k]``."""
        c, w = self.n_channels, self.window
        center = self.banks["conv"].center
        centred = window
        if center.any() and (self.channels < c).any():
            centred = g.op("Sub", [window, g.const(f"{prefix}_channel_mean",
                                                   center.reshape(1, 1, c))],
                           name=f"{prefix}_centre")
        time_axis = g.const(f"{prefix}_window_time_axis", np.array([1], np.int64))
        if self.uses_diff:
            later = g.op("Slice", [window, g.const(f"{prefix}_one", np.array([1], np.int64)),
                                   g.const(f"{prefix}_end", np.array([w], np.int64)),
                                   time_axis], name=f"{prefix}_later")
            earlier = g.op("Slice", [window, g.const(f"{prefix}_zero", np.array([0], np.int64)),
                                     g.const(f"{prefix}_last", np.array([w - 1], np.int64)),
                                     time_axis], name=f"{prefix}_earlier")
            step = g.op("Sub", [later, earlier], name=f"{prefix}_diff_series")
            padded = g.op("Pad", [step, g.const(f"{prefix}_pad_end",
                                                np.array([0, 0, 0, 0, 1, 0], np.int64))],
                          name=f"{prefix}_diff_padded")
            if (self.channels >= c).all():
                series = padded
                channels = self.channels - c
            else:
                series = g.op("Concat", [centred, padded], name=f"{prefix}_stacked", axis=2)
                channels = self.channels
            n_series = c if (self.channels >= c).all() else 2 * c
        else:
            series, channels, n_series = centred, self.channels, c
        x = g.op("Transpose", [series], name=f"{prefix}_channels_first", perm=[0, 2, 1])
        if len(channels) < n_series:
            x = g.op("Gather", [x, g.const(f"{prefix}_channels", channels)],
                     name=f"{prefix}_channels_in_use", axis=1)
        outs = []
        for d, weights in self.plan:
            pad = (KERNEL_LENGTH // 2) * d
            outs.append(g.op("Conv", [x, g.const(f"{prefix}_d{d}_kernels", weights)],
                             name=f"{prefix}_d{d}", kernel_shape=[KERNEL_LENGTH],
                             dilations=[d], pads=[pad, pad],
                             **({"strides": [self.stride]} if self.stride > 1 else {})))
        out = outs[0] if len(outs) == 1 else g.op("Concat", outs, name=f"{prefix}_convs", axis=1)
        if not self.identity_rows:
            out = g.op("Gather", [out, g.const(f"{prefix}_rows", self.rows)],
                       name=f"{prefix}_kept_rows", axis=1)
        above = g.op("Greater", [out, g.const(f"{prefix}_biases", self.biases[:, None])],
                     name=f"{prefix}_above_bias")
        above = g.op("Cast", [above], name=f"{prefix}_as_float", to=TensorProto.FLOAT)
        axis = g.const(f"{prefix}_time_axis", np.array([2], np.int64))
        if self.all_counted:
            return g.op("ReduceMean", [above, axis], name=f"{prefix}_ppv", keepdims=0)
        inside = g.op("Mul", [above, g.const(f"{prefix}_counted", self.mask)],
                      name=f"{prefix}_where_counted")
        total = g.op("ReduceSum", [inside, axis], name=f"{prefix}_count", keepdims=0)
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


def fit_pruned(family, x: np.ndarray, y, splits=None) -> None:
    """Fit ``family`` (a ConvFeatures with ``pool``): pool, detachment, kept features.

    Sets ``banks_`` (the pool fitted on all windows), ``kept_``, ``pruned_``, ``pruning_``
    (the record for report.json) and ``fold_features_`` (per split, the training and
    validation features of that fold's own kept set at the chosen size, for the
    selection's cross-validation of the network on top).
    """
    if y is None:
        raise ValueError("conv:pool=... chooses its features with the labels: "
                         "fit(windows, y) (the pipeline passes them)")
    cpu0 = time.process_time()
    y = np.asarray(y)
    if len(y) != len(x):
        raise ValueError(f"got {len(x)} windows but {len(y)} labels")
    classes, codes = np.unique(y, return_inverse=True)
    n_classes = len(classes)
    seed = 0 if family.random_state is None else int(family.random_state)
    keep = family.keep

    def pool_family():
        return type(family)(n_features=int(family.pool), diff=family.diff,
                            max_dilations_per_kernel=family.max_dilations_per_kernel,
                            random_state=seed)

    stride = pool_stride(x.shape[1], family.positions)
    full = pool_family().fit_banks(x, stride)
    pool = full.n_features_out_
    if keep != "auto" and int(keep) > pool:
        raise ValueError(f"keep={keep} is more than the pool of {pool} features")
    min_keep = pruning.MIN_KEEP if keep == "auto" else int(keep)
    sizes = pruning.schedule(pool, min_keep=min(min_keep, pool))

    # The Conv node (dilation) of each pool feature: what a cost-aware ranking groups by.
    dilation = np.concatenate([bank.dilations[feature_table(bank)[0]]
                               for bank in full.banks_.values()])
    fold_data: list[tuple[np.ndarray, np.ndarray]] = []
    if keep == "auto":
        if splits is None:
            from trainer.selection import folds

            splits = folds(y, seed)
        # All pools in one pass: the folds' difference banks share their convolutions.
        pools = type(family).transform_pools(
            [pool_family().fit_banks(x[tr], stride) for tr, _ in splits] + [full], x)
        for k, (tr, va) in enumerate(splits):
            fold_data.append((pools[k][tr], pools[k][va]))
            pools[k] = None
        F, pools = pools[-1], None
    else:
        F = full.transform(x)
    family.banks_ = full.banks_
    family.window_, family.channels_ = full.window_, full.channels_

    def ranked(dilation_cost: float) -> dict[str, Any]:
        """One detachment order: on every fold (the curve) and on all windows, then the
        step chosen within the budget."""
        folds_removed, accs = [], []
        for (tr, va), (F_tr, F_va) in zip(splits if fold_data else (), fold_data,
                                          strict=True):
            removed, acc, _ = pruning.detach(F_tr, codes[tr], n_classes, sizes, F_va,
                                             codes[va], seed=seed, groups=dilation,
                                             group_cost=dilation_cost)
            folds_removed.append(removed)
            accs.append(acc)
        removed, _, rel = pruning.detach(F, codes, n_classes, sizes, seed=seed,
                                         groups=dilation, group_cost=dilation_cost)
        r = {"removed": removed, "folds_removed": folds_removed, "rel": rel,
             "dilation_cost": dilation_cost, "latencies": {}, "first_allowed": 0,
             "curve": None, "step": len(sizes) - 1}
        if not fold_data:  # keep=N keeps N, budget or not
            return r
        r["curve"] = np.mean(accs, axis=0)
        r["smoothed"] = pruning.smooth(r["curve"])
        if family.budget_us:
            r["first_allowed"] = _first_within_budget(
                family, x[0], removed, sizes, float(family.budget_us), r["latencies"],
                n_classes)
        r["step"] = pruning.choose_step(r["smoothed"], float(family.tolerance),
                                        r["first_allowed"], sizes,
                                        int(np.ceil(pruning.MIN_AUTO_SHARE * pool)))
        return r

    chosen = plain = ranked(0.0)
    binds = plain["curve"] is not None and _budget_binds(plain, float(family.tolerance))
    if binds:
        # More features than the budget holds would validate better: keep as many as it
        # holds. On that rising curve a smaller size validating as well is noise: PLAID's
        # cost-aware curve had a bump at 145 features within 0.7 points of its 471, and 145
        # scored 0.77 on test against 0.83 for 524 (BENCHMARKS.md, "Sixth pass"). And
        # spend the budget on features whose Conv node others share
        # (pruning.DILATION_COST), unless that order validates worse by more than the
        # tolerance.
        frugal = ranked(pruning.DILATION_COST)
        for order in (plain, frugal):
            order["step"] = order["first_allowed"]
        if (frugal["smoothed"][frugal["step"]]
                >= plain["smoothed"][plain["step"]] - float(family.tolerance)):
            chosen = frugal
    F = None  # the pool's features: not needed any more
    removed, curve, step = chosen["removed"], chosen["curve"], chosen["step"]
    latencies, first_allowed = chosen["latencies"], chosen["first_allowed"]
    rel = chosen["rel"]
    _set_kept(family, np.flatnonzero(removed > step))
    family.fold_features_ = [
        (F_tr[:, r > step], F_va[:, r > step])
        for r, (F_tr, F_va) in zip(chosen["folds_removed"], fold_data, strict=True)]
    family.pruning_ = {
        "method": "Sequential Feature Detachment (Detach-ROCKET): ridge on standardized "
                  f"features, {pruning.DROP_FRACTION:.0%} of the remaining detached per step",
        "pool": int(pool),
        "kept": int(sizes[step]),
        "keep": keep,
        "tolerance": float(family.tolerance),
        "relative_alpha": rel,
        "scoring_relative_alpha": pruning.SCORING_ALPHA,
        "folds": len(splits) if curve is not None else 0,
        "budget_us": float(family.budget_us) if family.budget_us else None,
        "largest_within_budget": int(sizes[first_allowed]),
        "steps": [
            {"n_features": int(n),
             **({"validation_accuracy": round(float(curve[s]), 4),
                 "smoothed_accuracy": round(float(chosen["smoothed"][s]), 4)}
                if curve is not None
                else {}),
             **({"batch1_latency_us": round(latencies[s], 1)} if s in latencies else {})}
            for s, n in enumerate(sizes)],
        "chosen_step": int(step),
        "budget_binds": binds,
        "dilation_cost": chosen["dilation_cost"],
    }
    if binds:  # what each order would have kept, for comparison
        family.pruning_["importance_order"] = {
            "kept": int(sizes[plain["step"]]),
            "smoothed_accuracy": round(float(plain["smoothed"][plain["step"]]), 4)}
        family.pruning_["cost_aware_order"] = {
            "kept": int(sizes[frugal["step"]]),
            "smoothed_accuracy": round(float(frugal["smoothed"][frugal["step"]]), 4)}
    if curve is not None:
        family.pruning_["validation_accuracy"] = round(float(curve[step]), 4)
    family.pruning_["batch1_latency_us"] = round(
        latencies[step] if step in latencies
        else features_latency_us(family, x[0], n_classes), 1)
    family.pruning_["fit_cpu_s"] = round(time.process_time() - cpu0, 2)


def _budget_binds(ranking: dict[str, Any], tolerance: float) -> bool:
    """Whether some step over the budget validates better, by more than ``tolerance``, than
    every step within it."""
    smoothed, first = ranking["smoothed"], ranking["first_allowed"]
    return bool(first > 0 and smoothed[:first].max() > smoothed[first:].max() + tolerance)


def _set_kept(family, kept: np.ndarray) -> None:
    family.kept_ = np.asarray(kept, np.int64)
    family.pruned_ = PrunedConv(family.banks_, family.kept_, family.window_)


def features_latency_us(family, window: np.ndarray, n_classes: int = 2) -> float:
    """Batch-1 latency (reference us, :func:`trainer.sessions.reference_latency_us`) of a
    model made of the family and a linear head.

    The family's graph, then what an exported model puts after it (scaling ``Sub``/``Mul``,
    ``MatMul``, ``Add``, ``Softmax``; zero weights: they do not change the time), so the
    size the pruning stops at fits the budget as a whole model, not just as features.
    """
    from trainer import sessions
    from trainer.graph import float_input

    k = family.n_features_out_
    g = GraphBuilder("conv_latency_probe")
    feats = family.to_onnx(g, "window")
    x = g.op("Sub", [feats, g.const("probe_mean", np.zeros(k, np.float32))], name="probe_centre")
    x = g.op("Mul", [x, g.const("probe_scale", np.ones(k, np.float32))], name="probe_scale")
    x = g.op("MatMul", [x, g.const("probe_w", np.zeros((k, n_classes), np.float32))],
             name="probe_matmul")
    x = g.op("Add", [x, g.const("probe_b", np.zeros(n_classes, np.float32))], name="probe_add")
    out = g.rename(g.op("Softmax", [x], name="probe_softmax", axis=-1), "probabilities")
    model = g.model([float_input("window", ["batch", family.window_, family.channels_])],
                    [float_input(out, ["batch", n_classes])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sessions.reference_latency_us(sessions.session(model), window)


def _first_within_budget(family, window, removed, sizes, budget: float,
                         latencies: dict[int, float], n_classes: int) -> int:
    """The first step (largest size) whose graph fits ``budget``: a binary search.

    Cost grows with the features kept, so the steps that fit form a tail of the schedule.
    When even the last does not fit, the last is returned (with a warning).
    """
    probe = copy.copy(family)

    def latency(step: int) -> float:
        if step not in latencies:
            _set_kept(probe, np.flatnonzero(removed > step))
            latencies[step] = features_latency_us(probe, window, n_classes)
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
            "kept_per_bank": family.pruned_.per_bank(),
            "validation_accuracy": p.get("validation_accuracy"),
            "budget_us": p["budget_us"]}
