"""Classification figures in plain numpy: accuracy, macro-F1, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion(y_true, y_pred, labels: Sequence[str]) -> np.ndarray:
    """``[len(labels), len(labels)]`` counts: row = true label, column = predicted.

    True labels not in ``labels`` are ignored here (they count as errors in accuracy).
    """
    index = {str(label): i for i, label in enumerate(labels)}
    t = np.array([index.get(str(v), -1) for v in np.asarray(y_true).tolist()])
    p = np.array([index.get(str(v), -1) for v in np.asarray(y_pred).tolist()])
    keep = (t >= 0) & (p >= 0)
    k = len(labels)
    return np.bincount(t[keep] * k + p[keep], minlength=k * k).reshape(k, k)


def macro_f1(cm: np.ndarray) -> float:
    """Unweighted mean over classes present in truth or prediction of the per-class F1."""
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    present = (support + predicted) > 0
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def scores(y_true, y_pred, labels: Sequence[str]) -> dict:
    """``accuracy``, ``macro_f1``, ``n`` and the ``confusion`` matrix (nested lists)."""
    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    cm = confusion(y_true, y_pred, labels)
    return {
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "macro_f1": macro_f1(cm),
        "n": int(len(y_true)),
        "labels": [str(v) for v in labels],
        "confusion": cm.tolist(),
    }
