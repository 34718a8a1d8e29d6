"""Anomaly thresholds calibrated on time: blocked folds, a target false-alarm rate, and the
false-alarm rate to expect on later data.

Scores of a detector on shuffled windows of one stretch of time are optimistic: a held-out
window has neighbours in the training folds that are almost the same window. Real sensors
drift and change operating point, so the windows a deployed model meets are *later* than
anything it was trained on. Here the normal windows are cut into contiguous blocks in time
(per device: block ``b`` of each device is the ``b``-th stretch of that device's windows)
and each block is scored by a detector trained on the other blocks, so every calibration
score is the score of a stretch of time the detector has not seen.

The threshold for a target false-alarm rate ``t`` (share of normal windows flagged) is the
larger of the ``1 - t / TAIL_MARGIN`` quantile of a log-normal fitted to all the blocked
scores and the highest per-block empirical ``1 - t`` quantile (every held-out stretch of
time would have had at most ``t`` false alarms). The margin (:data:`TAIL_MARGIN`, 100) is
measured, not assumed: on the later part of real body-worn accelerometer recordings
(``bench/bench_anomaly.py``, four recordings, two split points, two window lengths, both
detectors) the scores of later normal windows had a heavier tail than even the blocked
calibration scores, and the plain ``1 - t`` quantile let through 1.7 to 3.4% false alarms
on average (up to 8%); at ``1 - t / 100`` the mean was 1.0% and the synthetic faults and
the UCR anomaly were detected as before but for 1-2% of the fault windows. So ``t`` is a
bound to stay under, not a rate to hit.

The false-alarm rate to expect on later data is estimated without the data it is scored
on: for each block, the threshold is computed from the *other* blocks' scores alone and
the share of that block's scores above it counted. The mean over blocks is the estimate;
the last block (the latest stretch of time, with a threshold from earlier data only, the
situation of a deployed model) is reported beside it.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

CALIBRATIONS = ("blocked", "shuffled")
DEFAULT_TARGET_FALSE_ALARMS = 0.01
# The log-normal quantile is taken at 1 - target / TAIL_MARGIN (see the module docstring).
TAIL_MARGIN = 100.0


def folds(n: int, n_folds: int, *, calibration: str = "blocked", groups=None,
          random_state: int | None = 0) -> np.ndarray:
    """Fold index per window.

    Parameters
    ----------
    n : int
        Windows, in time order within each group.
    n_folds : int
    calibration : {"blocked", "shuffled"}
        ``"blocked"``: fold ``b`` is the ``b``-th contiguous stretch of each group's
        windows; ``"shuffled"``: windows dealt to folds at random.
    groups : array-like of str, optional
        Device (or file) of each window; ``None``: one group.
    random_state : int or None
        For ``"shuffled"``.
    """
    if calibration == "shuffled":
        return np.random.default_rng(random_state).permutation(n) % n_folds
    if calibration != "blocked":
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
    groups = np.zeros(n, np.int8) if groups is None else np.asarray(groups)
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} windows")
    out = np.empty(n, np.int64)
    for g in dict.fromkeys(groups.tolist()):
        rows = np.flatnonzero(groups == g)
        # position in the group's own timeline -> block; a short group still spans folds
        out[rows] = np.arange(len(rows)) * n_folds // max(len(rows), 1)
    return out


def lognormal_quantile(scores: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of a log-normal fitted to ``scores`` (which are >= 0)."""
    scores = np.asarray(scores, np.float64)
    # a zero (a window exactly on a centroid) must not give log(0)
    floor = max(float(np.median(scores)) * 1e-6, 1e-12)
    logs = np.log(np.maximum(scores, floor))
    z = NormalDist().inv_cdf(quantile)
    return float(np.exp(logs.mean() + z * logs.std(ddof=1)))


def target_threshold(scores: np.ndarray, fold: np.ndarray, target: float) -> float:
    """Threshold for a false-alarm rate of ``target`` on unseen stretches of time.

    The larger of the log-normal ``1 - target / TAIL_MARGIN`` quantile of all ``scores``
    and the largest per-fold empirical ``1 - target`` quantile (see the module docstring).
    """
    scores = np.asarray(scores, np.float64)
    per_fold = [np.quantile(scores[fold == f], 1.0 - target) for f in np.unique(fold)]
    return max(lognormal_quantile(scores, 1.0 - target / TAIL_MARGIN), float(max(per_fold)))


def held_out_false_alarms(scores: np.ndarray, fold: np.ndarray, rule) -> list[float]:
    """Per fold, the share of its scores above ``rule(other folds' scores, their folds)``."""
    scores = np.asarray(scores, np.float64)
    out = []
    for f in np.unique(fold):
        rest = fold != f
        out.append(float((scores[~rest] > rule(scores[rest], fold[rest])).mean()))
    return out
