"""Choosing the default features and network by an internal validation split.

When the user gives no ``--features`` (or no ``--hidden``), ``sigmoid-train fit``
scores every combination of :data:`trainer.features.registry.DEFAULT_CANDIDATES` and
:data:`NETWORK_CANDIDATES` by stratified k-fold cross-validation on the training
windows only (the test file is never looked at) and refits the best on all of them.
Ties in accuracy (common: 40-70 training windows give 1.5-2.5 point steps) go to the
lower mean validation log-loss, a finer proper score; exact ties to the earlier, cheaper
candidate. On ItalyPowerDemand five candidates tie at 0.969 and log-loss picks the conv
features (test 0.971, against 0.962 for the first of them, raw + stats). Features are
computed once per feature set on all training windows (the families learn nothing from
labels); the scaler and the network are fitted inside each fold.

A latency budget (like Edge Impulse's EON Tuner, which searches within a target's
latency): when ``latency_of`` is given, each feature set's exported graph is timed at
batch 1 (in reference microseconds, :func:`trainer.sessions.reference_latency_us`: the
choice must not depend on what else runs), and only candidates within
``latency_budget_us`` can win.
The conv features cost ~10x the statistics (BasicMotions, 100 x 6 samples: 200-223 us
against 17 us here) for the same validation accuracy, so the default budget
(:data:`DEFAULT_LATENCY_BUDGET_US`) keeps them where they are cheap (ItalyPowerDemand, 24
samples: 53-61 us) and out where they are not. When nothing fits the budget, the best
candidate wins anyway, with a warning.

The convolutional candidate is a pruned MiniRocket pool (``conv:pool=10080:keep=auto``,
:mod:`trainer.features.pruned_conv`): it chooses its features with the labels, so it is
fitted with the same folds, and each fold is scored on features chosen without its
validation windows (``fold_features_``). :func:`with_budget` hands it
:data:`FEATURE_BUDGET_SHARE` of the budget, which it meets by pruning further.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from trainer.features.downsample import Downsampled
from trainer.features.registry import split_spec

log = logging.getLogger(__name__)

# Network settings tried by default: logistic regression at three L2 strengths, and one
# hidden sigmoid layer at scikit-learn's default LogisticRegression penalty (alpha = 1/C =
# 1), all trained to convergence (a tighter tol than the network's default measured +0.3 to
# +1.5 points on ItalyPowerDemand) with full-batch L-BFGS, as scikit-learn's
# LogisticRegression and its MLP advise for small data: on 40-430 windows it reached a
# lower training loss than Adam in 500 epochs, 3-20x faster (BENCHMARKS.md, "Sixth pass").
# The strength is chosen by cross-validation, as MiniRocket's ridge chooses its own: with
# hundreds of kept features for a hundred windows alpha 1 overfits (Covid3Month_disc, 890
# features for 140 windows: 0.61 test at alpha 1, 0.69 at the chosen 100), and on the other
# aeon sets the choice changed no test accuracy (BENCHMARKS.md, "Fifth pass").
CONVERGED = {"solver": "lbfgs", "tol": 1e-6, "max_epochs": 500}
HEAD_ALPHAS = (1.0, 10.0, 100.0)
NETWORK_CANDIDATES: tuple[dict[str, Any], ...] = (
    *({"hidden_layers": (), "alpha": a, **CONVERGED} for a in HEAD_ALPHAS),
    {"hidden_layers": (32,), "alpha": 1.0, **CONVERGED},
)
# Batch-1 CPU time (us, onnxruntime, 1 thread, on the training machine) a default choice may
# cost; a Raspberry Pi 4 is several times slower. 0 or None: no budget.
DEFAULT_LATENCY_BUDGET_US = 100.0
# Share of the budget a pruned conv pool may use: it times its features with the scaling
# and a linear head after them while it prunes; the rest is for a hidden layer, the int8
# model's quantization nodes and timing noise (the selection times the whole float model).
# The noise is the larger part: one int8 model re-timed seven times spans +-10% (Beef
# 77-93 reference us, ACSF1 70-83), and the pruning's search keeps the largest size that
# timed within its share once, a lucky draw at the boundary. At 0.85, PLAID's model (524
# features) measured 90.7 and 103.5 us in two benchmark runs (BENCHMARKS.md, "Sixth pass").
FEATURE_BUDGET_SHARE = 0.8
# The prior: the pruned conv candidate (MiniRocket's features, the state of the art on the
# UCR/UEA archives) is chosen unless another candidate is better on the validation windows
# by more than this many standard errors of the paired difference (one-sided, 90%). Plain
# "highest validation accuracy" chose statistics on noise: on PigCVP (52 classes, 2
# windows each) every candidate validates at 2-10% and the statistics scored 19% on the
# test windows against 76% for the conv features.
PRIOR_Z = 1.28
MAX_FOLDS = 5
# Above this many windows one stratified hold-out of 25% replaces k-fold (time).
HOLDOUT_ABOVE = 3000


class TooFewWindows(ValueError):
    """Some class has too few training windows to cross-validate."""


def folds(y: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified (train, validation) index pairs: k-fold, or one hold-out for big data."""
    rng = np.random.default_rng(seed)
    classes, codes = np.unique(y, return_inverse=True)
    smallest = np.bincount(codes).min()
    k = int(min(MAX_FOLDS, smallest))
    if k < 2:
        raise TooFewWindows(f"the smallest class has {smallest} training window(s); "
                            "cross-validation needs at least 2 per class")
    fold_of = np.empty(len(y), int)
    for c in range(len(classes)):
        idx = np.flatnonzero(codes == c)
        fold_of[rng.permutation(idx)] = np.arange(len(idx)) % k
    if len(y) > HOLDOUT_ABOVE:
        return [(np.flatnonzero(fold_of != 0), np.flatnonzero(fold_of == 0))]
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


def with_budget(feature_sets: Sequence[Sequence[str]], budget_us: float | None
                ) -> list[list[str]]:
    """Feature sets whose pruned conv specs carry the latency budget (``budget_us=``).

    A spec with ``pool=`` prunes until its graph fits; one that already names a
    ``budget_us`` keeps it. No budget (0 or None): the sets unchanged.
    """
    out = []
    for features in feature_sets:
        specs = []
        for spec in features:
            name, kwargs = split_spec(spec)
            if (budget_us and name == "conv" and kwargs.get("pool") is not None
                    and "budget_us" not in kwargs):
                spec = f"{spec}:budget_us={round(float(budget_us) * FEATURE_BUDGET_SHARE, 1):g}"
            specs.append(spec)
        out.append(specs)
    return out


def select(
    X: np.ndarray,
    y: np.ndarray,
    feature_sets: Sequence[Sequence[str]],
    networks: Sequence[dict[str, Any]],
    *,
    seed: int = 0,
    network_factory=None,
    latency_of: Callable[[Sequence[str]], float] | None = None,
    latency_budget_us: float | None = None,
    fitted_out: dict | None = None,
    prior: Sequence[str] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score each (feature set, network) by cross-validated accuracy; return best and table.

    Families that learn nothing from labels are fitted once on all training windows.
    Supervised ones (a pruned conv pool) are fitted with the same folds and give each
    fold features chosen without its validation windows (``fold_features_``).

    Parameters
    ----------
    latency_of : callable, optional
        ``latency_of(features, families)`` -> batch-1 latency in microseconds of a model
        with these (fitted) feature families; recorded per candidate as
        ``batch1_latency_us``.
    latency_budget_us : float, optional
        Only candidates at or under it can be chosen (while any is); 0 or None: no budget.
    fitted_out : dict, optional
        Filled with ``tuple(features) -> fitted families`` (to fit the winner without
        fitting its families again).
    prior : sequence of str, optional
        A feature set that wins unless another is significantly better (:data:`PRIOR_Z`);
        the chosen row says how it won (``chosen_by``).
    """
    from trainer.pipeline import fit_families

    splits = folds(y, seed)
    table, outcomes = [], []
    for features in feature_sets:
        t0 = time.perf_counter()
        families = fit_families(features, X, y, seed, splits=splits)
        if fitted_out is not None:
            fitted_out[tuple(features)] = families
        parts = [f.transform(X) for f in families]
        widths = [p.shape[1] for p in parts]
        F = np.concatenate(parts, axis=1)
        del parts
        fold_data = [_fold_features(families, widths, F, tr, va, k)
                     for k, (tr, va) in enumerate(splits)]
        feat_time = time.perf_counter() - t0
        latency = (None if latency_of is None
                   else round(float(latency_of(features, families)), 1))
        pruning = [f.pruning_ for f in families if hasattr(f, "pruning_")]
        if (latency is not None and len(families) == 1 and pruning
                and not isinstance(families[0], Downsampled)):
            # A pruned pool alone: its pruning timed this same graph (features and a linear
            # head) at the size it kept. Both are best-of-blocks CPU times, so the lower is
            # the better estimate; one noisy re-timing must not undo the size the pruning
            # chose to fit its share of the budget (seen at load 10: 195 us then 240 us).
            # Not for a downsampled pool: the pruning saw the shorter windows and did not
            # time the Conv in front (a PLAID model measured 101.7 us that way).
            latency = min(latency, pruning[0].get("batch1_latency_us", latency))
        for params in networks:
            accs, losses = [], []
            correct = np.full(len(y), np.nan)  # out-of-fold, per window
            for (tr, va), (F_tr, F_va) in zip(splits, fold_data, strict=True):
                mean = F_tr.mean(axis=0)
                std = F_tr.std(axis=0)
                std = np.where(std > 1e-6, std, 1.0)
                net = _network(params, seed, network_factory)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # convergence notes on tiny folds
                    net.fit(((F_tr - mean) / std).astype(np.float32), y[tr])
                proba = np.asarray(
                    net.predict_proba(((F_va - mean) / std).astype(np.float32)))
                pred = net.classes_[proba.argmax(1)]
                correct[va] = pred == y[va]
                accs.append(float(correct[va].mean()))
                truth = np.searchsorted(net.classes_, y[va])
                losses.append(float(-np.log(np.clip(proba[np.arange(len(va)), truth],
                                                    1e-12, None)).mean()))
            row = {"features": list(features),
                   "hidden_layers": list(params.get("hidden_layers", ())),
                   **{k: v for k, v in params.items() if k != "hidden_layers"},
                   "validation_accuracy": round(float(np.mean(accs)), 4),
                   "validation_log_loss": round(float(np.mean(losses)), 4),
                   "folds": len(splits), "feature_time_s": round(feat_time, 3)}
            if latency is not None:
                row["batch1_latency_us"] = latency
            if pruning:
                row["pruning"] = [{k: p[k] for k in ("pool", "kept", "validation_accuracy",
                                                     "fit_cpu_s") if k in p} for p in pruning]
            log.info("candidate %s: validation accuracy %.4f", row, row["validation_accuracy"])
            table.append(row)
            outcomes.append(correct)
    eligible = table
    if latency_budget_us and latency_of is not None:
        eligible = [r for r in table if r["batch1_latency_us"] <= latency_budget_us]
        if not eligible:
            log.warning("no candidate fits the latency budget of %g us (the cheapest takes %g "
                        "us); choosing by accuracy alone", latency_budget_us,
                        min(r["batch1_latency_us"] for r in table))
            eligible = table
    # min() keeps the first of exact equals: the earlier, cheaper candidate.
    def score(r):
        return -r["validation_accuracy"], r["validation_log_loss"]

    best = min(eligible, key=score)
    best["chosen_by"] = "validation accuracy"
    favoured = [r for r in eligible if prior is not None and r["features"] == list(prior)]
    if favoured and best["features"] != list(prior):
        pick = min(favoured, key=score)
        z = paired_z(outcomes[_index(table, best)], outcomes[_index(table, pick)])
        best["prior_z"] = pick["prior_z"] = round(z, 2)
        if z <= PRIOR_Z:
            del best["chosen_by"]
            best = pick
            best["chosen_by"] = (f"prior: no candidate beats it by more than {PRIOR_Z:g} "
                                 "standard errors on the validation windows")
    return best, table


def _index(table: list[dict], row: dict) -> int:
    return next(i for i, r in enumerate(table) if r is row)


def paired_z(a: np.ndarray, b: np.ndarray) -> float:
    """How many standard errors ``a``'s per-window correctness beats ``b``'s (paired, over
    the windows both were validated on; +inf when ``a`` wins every disagreement)."""
    both = ~(np.isnan(a) | np.isnan(b))
    d = a[both] - b[both]
    if d.size < 2 or not d.any():
        return 0.0
    se = d.std(ddof=1) / np.sqrt(d.size)
    return float(d.mean() / se) if se > 0 else float(np.sign(d.mean()) * np.inf)


def _fold_features(families, widths, F: np.ndarray, tr: np.ndarray, va: np.ndarray, k: int):
    """Training and validation features of fold ``k``: a supervised family's own per-fold
    features (chosen without the validation windows), every other family's columns of F."""
    if not any(getattr(f, "fold_features_", None) for f in families):
        return F[tr], F[va]
    parts_tr, parts_va, start = [], [], 0
    for f, width in zip(families, widths, strict=True):
        if getattr(f, "fold_features_", None):
            parts_tr.append(f.fold_features_[k][0])
            parts_va.append(f.fold_features_[k][1])
        else:
            parts_tr.append(F[tr, start:start + width])
            parts_va.append(F[va, start:start + width])
        start += width
    return np.concatenate(parts_tr, axis=1), np.concatenate(parts_va, axis=1)


def _network(params: dict[str, Any], seed: int, factory):
    from trainer.pipeline import default_network

    params = dict(params)
    hidden = tuple(params.pop("hidden_layers", ()))
    return (factory or default_network)(hidden, seed, **params)
