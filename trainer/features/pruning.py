"""Sequential Feature Detachment: prune a large feature pool with a ridge classifier.

The recipe of Uribarri, Ferrari and Mirasso, "Detach-ROCKET: Sequential feature selection
for time series classification with random convolutional kernels" (2023): fit a strongly
regularised ridge classifier on all features, drop the share of features with the smallest
coefficients (summed over classes, on standardized features), refit on the rest, and so on;
then keep the smallest set whose validation accuracy is within a tolerance of the best.
Here the ranking ridge is the minimum-norm fit (:data:`RANKING_ALPHA`), which ranked features
better for the logistic head than the paper's cross-validated strength; each step's validation
accuracy is measured with a slightly regularised one (:data:`SCORING_ALPHA`).

Everything here is plain linear algebra on precomputed feature matrices (the family that
owns the pool, :class:`trainer.features.conv.ConvFeatures` with ``pool=``, fits the pool
inside each fold and calls :func:`detach`). The ridge is solved in its dual form: with
``n`` windows and ``p`` features, ``K = F F^T`` is ``n x n`` and dropping features
downdates it (``K -= F_d F_d^T``), so a whole detachment sequence costs about one
``n^2 p`` product plus one ``n x n`` solve per step, whatever the pool size.
"""

from __future__ import annotations

import numpy as np

# Share of the remaining features dropped at each step (the paper drops 5%; 10% halves the
# steps and measured the same curve shape here), and the smallest set kept.
DROP_FRACTION = 0.1
MIN_KEEP = 8
# keep="auto" keeps at least this share of the pool (when the budget allows): with a few
# dozen validation windows the accuracy curve is flat down to a handful of features, and
# sets that small measured several points worse on test (ItalyPowerDemand: 8 features
# 0.923, 105 features 0.966). 10% (Detach-ROCKET's average retained share) measured worse
# on the aeon sets as a whole (mean 0.830 vs 0.847 on six: the logistic head on 36-140
# windows does better on fewer features; BENCHMARKS.md).
MIN_AUTO_SHARE = 0.01
# Steps averaged when reading the cross-validated curve (see smooth()).
SMOOTHING = 3
# Ridge strength of the ranking, relative to the number of features left: the minimum-norm
# fit (the eigenvalues of K on standardized features are >= ~10 where this is ~1e-3).
# Prediction-optimal strengths rank worse for the logistic head on the kept few hundred: a
# leave-one-out choice (intercept's leverage counted, checked against brute-force refits)
# picked 0.1-1 on most aeon sets, and the defaults' mean test accuracy on the ten fell from
# 0.8993 to 0.8818 (PickupGestureWiimoteZ 0.82 -> 0.70, Covid3Month_disc 0.61 -> 0.54);
# before that, a grid that was meant to choose by leave-one-out error always ended at its
# weakest strength (the intercept's leverage was missing) and measured best (BENCHMARKS.md).
RANKING_ALPHA = 1e-7
# Ridge strength the validation accuracy of each step is measured with (relative, as
# above). Not the ranking's: the minimum-norm fit interpolates the training windows, and
# near as many features as training windows (p ~ n) its validation accuracy collapses (the
# "double descent" peak) whatever the features are worth. On PLAID (430 training windows a
# fold) the curve fell from 0.70 at 800 features to 0.26 at 427 and recovered to 0.65 at
# 120, so the pruning kept 130 features where the budget held 276; at this strength the
# same steps score 0.70, 0.69 and 0.65, and the curve elsewhere moves by a window or two.
# Measured on the default fit (BENCHMARKS.md, "Fifth pass"): PLAID 0.749 -> 0.777 (276
# kept), ACSF1 0.89 -> 0.90, every other set the same accuracy.
SCORING_ALPHA = 1e-3
# What a kept feature's Conv node (one per dilation in use) costs, in kept features: the
# exported graph costs about 1.4-1.6 reference us a Conv node and 0.08-0.14 us a feature
# (PickupGestureWiimoteZ: 130 features over 23 dilations 63 us, the same count over 6
# dilations 39 us; GunPoint: 44 against 31 us). Used only when the budget binds (see
# pruned_conv.fit_pruned): importance per unit of cost then holds more features within it.
DILATION_COST = 14.0
# A fold's ridge sees at most this many training windows (a stratified subsample): the dual
# solve is cubic in it. Validation always uses every held-out window.
MAX_RIDGE_WINDOWS = 1200


def schedule(pool: int, drop: float = DROP_FRACTION, min_keep: int = MIN_KEEP) -> np.ndarray:
    """Feature counts after each detachment step: ``pool``, ``pool * (1 - drop)``, ... ``min_keep``.

    Strictly decreasing; every fold and the final fit follow the same counts, so their
    validation accuracies line up step by step.
    """
    sizes = [int(pool)]
    while sizes[-1] > min_keep:
        nxt = min(sizes[-1] - 1, int(np.floor(sizes[-1] * (1.0 - drop))))
        sizes.append(max(nxt, min_keep))
    return np.array(sizes)


def standardize(F_train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Float64 copies scaled by the training mean and spread (constant features get 1)."""
    mean = F_train.mean(axis=0, dtype=np.float64)
    std = F_train.std(axis=0, dtype=np.float64)
    std = np.where(std > 1e-6, std, 1.0)
    return [(np.asarray(F, np.float64) - mean) / std for F in (F_train, *others)]


def targets(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Centred one-vs-rest targets (+1 / -1): the intercept of a ridge classifier."""
    Y = -np.ones((len(codes), n_classes))
    Y[np.arange(len(codes)), codes] = 1.0
    return Y - Y.mean(axis=0)


def subsample(codes: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` indices, stratified (each class keeps its share), sorted."""
    if len(codes) <= limit:
        return np.arange(len(codes))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(codes):
        idx = np.flatnonzero(codes == c)
        take = max(1, int(round(limit * len(idx) / len(codes))))
        keep.append(rng.choice(idx, min(take, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


def detach(
    F_train: np.ndarray,
    codes_train: np.ndarray,
    n_classes: int,
    sizes: np.ndarray,
    F_val: np.ndarray | None = None,
    codes_val: np.ndarray | None = None,
    seed: int = 0,
    groups: np.ndarray | None = None,
    group_cost: float = 0.0,
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Run the detachment sequence on one training set.

    Parameters
    ----------
    F_train : ndarray, shape (n, p)
        Pool features of the training windows (raw: standardized here on them alone).
    codes_train : ndarray of int, shape (n,)
        Class index per training window.
    n_classes : int
        Number of classes.
    sizes : ndarray of int
        Feature counts per step, from :func:`schedule` (``sizes[0] == p``).
    F_val, codes_val : ndarray, optional
        Held-out windows to score each step on.
    seed : int
        For the stratified subsample of large training sets.
    groups : ndarray of int, shape (p,), optional
        A cost group per feature (the pruned graph's ``Conv`` node: its dilation).
    group_cost : float
        With ``groups``: what a group costs on its own, in features. Each feature's
        importance is divided by its share of the cost, ``1 + group_cost / n`` with ``n``
        the features left in its group, so small groups are detached first (0: plain
        importance).

    Returns
    -------
    removed_at : ndarray of int, shape (p,)
        The step at which each feature was detached (``len(sizes)`` for those never
        detached): the features of step ``s`` are ``removed_at > s``.
    accuracy : ndarray of float, shape (len(sizes),) or None
        Validation accuracy at each step (with ``F_val``) of the ridge classifier at
        :data:`SCORING_ALPHA` on the step's features.
    relative_alpha : float
        The ridge strength used, relative to the features left (:data:`RANKING_ALPHA`).
    """
    rows = subsample(codes_train, MAX_RIDGE_WINDOWS, seed)
    if F_val is None:
        (X,) = standardize(F_train[rows])
        V = None
    else:
        X, V = standardize(F_train[rows], F_val)
    Y = targets(codes_train[rows], n_classes)
    share = np.bincount(codes_train[rows], minlength=n_classes) / len(rows)
    y_mean = 2.0 * share - 1.0  # the mean of the +1 / -1 targets: the intercept
    p = X.shape[1]
    if sizes[0] != p:
        raise ValueError(f"schedule starts at {sizes[0]} features but the pool has {p}")
    K = X @ X.T
    rel = RANKING_ALPHA
    alive = np.arange(p)
    removed_at = np.full(p, len(sizes), dtype=np.int64)
    accuracy = np.zeros(len(sizes)) if V is not None else None
    eye = np.eye(len(rows))
    # X (and V) hold the alive features' columns only, in pool order: compacted once per
    # step rather than gathered for every product.
    for step, size in enumerate(sizes):
        A = np.linalg.solve(K + rel * size * eye, Y)  # dual coefficients [n, classes]
        W = X.T @ A  # primal coefficients [size, classes]
        if V is not None:
            A_val = np.linalg.solve(K + SCORING_ALPHA * size * eye, Y)
            scores = V @ (X.T @ A_val) + y_mean
            accuracy[step] = float((scores.argmax(axis=1) == codes_val).mean())
        if step + 1 == len(sizes):
            break
        n_drop = size - int(sizes[step + 1])
        importance = np.abs(W).sum(axis=1)
        if groups is not None and group_cost:
            g = groups[alive]
            importance /= 1.0 + group_cost / np.bincount(g.astype(np.intp))[g]
        # Stable order: among equal importances the later feature goes first.
        weakest = np.argsort(importance, kind="stable")[:n_drop]
        removed_at[alive[weakest]] = step + 1
        Xg = X[:, weakest]
        K -= Xg @ Xg.T
        keep = np.ones(size, bool)
        keep[weakest] = False
        alive, X = alive[keep], X[:, keep]
        if V is not None:
            V = V[:, keep]
    return removed_at, accuracy, rel


def smooth(curve: np.ndarray, width: int = SMOOTHING) -> np.ndarray:
    """Moving average over ``width`` neighbouring steps (shorter at the ends).

    Validation accuracy on a few dozen windows moves in steps of a window or more; one
    lucky step must not decide the size.
    """
    curve = np.asarray(curve, np.float64)
    half = width // 2
    return np.array([curve[max(0, i - half): i + half + 1].mean() for i in range(len(curve))])


def choose_step(accuracy: np.ndarray, tolerance: float, first_allowed: int = 0,
                sizes: np.ndarray | None = None, min_size: int = 0) -> int:
    """The last (smallest) step from ``first_allowed`` on within ``tolerance`` of the best.

    With ``sizes`` and ``min_size``, steps smaller than ``min_size`` are not chosen while a
    step from ``first_allowed`` on is at least that big; when none is (a tight latency
    budget), ``first_allowed`` (the largest that fits) is.
    """
    acc = np.asarray(accuracy, np.float64)
    last = len(acc) - 1
    if sizes is not None and min_size:
        big = np.flatnonzero(np.asarray(sizes) >= min_size)
        last = int(big[-1]) if big.size else 0
        if last < first_allowed:
            return int(first_allowed)
    window = acc[first_allowed:last + 1]
    ok = np.flatnonzero(window >= window.max() - tolerance - 1e-12)
    return int(first_allowed + ok[-1])
