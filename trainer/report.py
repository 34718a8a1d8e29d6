"""``report.json`` and ``report.png`` of every ``sigmoid-train`` command that writes them.

The only module that draws (matplotlib, headless, imported when a figure is made):
:func:`figure_png` for ``fit`` (loss curve and confusion matrix), :func:`anomaly_png` for
``fit-anomaly`` (loss curve and score histograms), :func:`cluster_png` for ``cluster``
(a 2-D projection of the windows). :func:`report_json` encodes a report (numpy values
included) the same way for all of them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np


def report_json(report: dict[str, Any]) -> bytes:
    """``report.json``'s bytes: indented JSON, numpy scalars and arrays as plain values."""
    return (json.dumps(report, indent=2, default=_json_default) + "\n").encode()


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def figure_png(loss_curve: Sequence[float], confusion: np.ndarray, labels: Sequence[str],
               title: str, confusion_title: str, pruning: Sequence[dict] = (),
               step: str = "epoch") -> bytes:
    """Render the panels and return PNG bytes.

    ``step``: what one point of ``loss_curve`` is (an epoch, or an L-BFGS iteration).

    ``pruning``: the ``pruning_`` records of pruned conv pools (report.json's ``pruning``);
    those with cross-validated accuracies get a third panel, accuracy against the number
    of features kept at each detachment step, with the chosen size marked.
    """
    plt = _pyplot()
    cm = np.asarray(confusion)
    curves = [p for p in pruning if p.get("steps") and "validation_accuracy" in p["steps"][0]]
    fig, axes = plt.subplots(1, 3 if curves else 2, figsize=(16.5 if curves else 11, 4.5))
    ax_loss, ax_cm = axes[0], axes[1]
    try:
        for p in curves:
            _pruning_panel(axes[2], p)
        if len(loss_curve):
            ax_loss.plot(np.arange(1, len(loss_curve) + 1), loss_curve)
            ax_loss.set_yscale("log" if min(loss_curve) > 0 else "linear")
        ax_loss.set_xlabel(step)
        ax_loss.set_ylabel("training loss")
        ax_loss.set_title("loss curve")
        ax_loss.grid(alpha=0.3)

        ax_cm.imshow(cm, cmap="Blues")
        ticks = np.arange(len(labels))
        ax_cm.set_xticks(ticks, labels=[str(v) for v in labels], rotation=45, ha="right")
        ax_cm.set_yticks(ticks, labels=[str(v) for v in labels])
        ax_cm.set_xlabel("predicted")
        ax_cm.set_ylabel("true")
        ax_cm.set_title(confusion_title)
        top = cm.max() if cm.size else 0
        for (i, j), v in np.ndenumerate(cm):
            ax_cm.text(j, i, str(v), ha="center", va="center",
                       color="white" if v > top / 2 else "black", fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        return _png(fig)
    finally:
        plt.close(fig)


def _pruning_panel(ax, p: dict) -> None:
    ax.plot([s["n_features"] for s in p["steps"]],
            [s["validation_accuracy"] for s in p["steps"]], marker=".")
    ax.axvline(p["kept"], color="tab:red", linestyle="--",
               label=f"kept {p['kept']} of {p['pool']}")
    if p.get("budget_us"):
        ax.axvline(p["largest_within_budget"], color="grey", linestyle=":",
                   label=f"largest within {p['budget_us']:g} us")
    ax.set_xscale("log")
    ax.set_xlabel("features kept")
    ax.set_ylabel("cross-validated accuracy (ridge)")
    # The budget bound and the cost-aware order was used: say so, it is a different curve.
    ax.set_title("feature detachment" + (", per unit of cost" if p.get("dilation_cost")
                                         else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display on a build server
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def anomaly_png(loss_curve, calibration, test_scores, test_y, threshold, normal,
                title, cluster_sizes=None) -> bytes:
    """``fit-anomaly``'s figure: the loss curve (or the windows per centroid for k-means)
    and the score histograms of normal and test windows against the threshold."""
    plt = _pyplot()
    fig, (ax_loss, ax_hist) = plt.subplots(1, 2, figsize=(11, 4.5))
    try:
        if len(loss_curve):
            ax_loss.plot(np.arange(1, len(loss_curve) + 1), loss_curve)
            ax_loss.set_yscale("log")
            ax_loss.set_title("autoencoder loss (mean squared reconstruction error / 2)")
            ax_loss.set_xlabel("epoch")
        elif cluster_sizes:
            ax_loss.bar(np.arange(len(cluster_sizes)), cluster_sizes)
            ax_loss.set_xlabel("k-means centroid")
            ax_loss.set_ylabel("training windows")
            ax_loss.set_title("normal windows per centroid")
        ax_loss.grid(alpha=0.3)
        groups = [("normal (training, out-of-fold)", calibration)]
        if test_scores is not None:
            for label in sorted(set(test_y.tolist()) - {""}):
                groups.append((f"test: {label}", test_scores[test_y == label]))
        everything = np.concatenate([g for _, g in groups])
        low = max(everything.min(), 1e-6)
        bins = np.geomspace(low, max(everything.max(), threshold) * 1.05, 50)
        for label, values in groups:
            ax_hist.hist(np.maximum(values, low), bins=bins, histtype="step", density=True,
                         label=label, lw=1.5)
        ax_hist.axvline(threshold, color="k", ls="--", label="anomaly_threshold")
        ax_hist.set_xscale("log")
        ax_hist.set_xlabel("anomaly_score")
        ax_hist.set_title("scores (normal = " + normal + ")")
        ax_hist.legend(fontsize=7)
        fig.suptitle(title)
        fig.tight_layout()
        return _png(fig)
    finally:
        plt.close(fig)


def projection(F: np.ndarray, n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of ``F``: the ``[n_features, n]`` basis and the mean."""
    mean = F.mean(axis=0)
    _, _, vt = np.linalg.svd(F - mean, full_matrices=False)
    return vt[:n].T, mean


def cluster_png(F, cluster, centers, y, title) -> bytes:
    """``cluster``'s figure: scaled features ``F`` projected on two principal components,
    coloured by cluster, and by the file's labels when it has any."""
    plt = _pyplot()
    basis, mean = projection(F)
    P = (F - mean) @ basis
    C = (centers - mean) @ basis
    has_labels = (y != "").any()
    fig, axes = plt.subplots(1, 2 if has_labels else 1, figsize=(11 if has_labels else 6, 5),
                             squeeze=False)
    try:
        ax = axes[0, 0]
        cmap = plt.get_cmap("tab10" if len(centers) <= 10 else "tab20")
        for i in range(len(centers)):
            rows = cluster == i
            ax.scatter(P[rows, 0], P[rows, 1], s=8, color=cmap(i % cmap.N), alpha=0.6,
                       label=f"cluster_{i} ({rows.sum()})")
            ax.annotate(f"cluster_{i}", C[i], fontsize=9, weight="bold")
        ax.scatter(C[:, 0], C[:, 1], marker="x", color="k", s=60)
        ax.set_xlabel("principal component 1 (scaled features)")
        ax.set_ylabel("principal component 2")
        ax.set_title("windows coloured by cluster")
        ax.legend(fontsize=7, markerscale=2)
        if has_labels:
            ax = axes[0, 1]
            labels = sorted(set(y.tolist()))
            for j, label in enumerate(labels):
                rows = y == label
                ax.scatter(P[rows, 0], P[rows, 1], s=8, alpha=0.6, color=cmap(j % cmap.N),
                           label=label or "(unlabelled)")
            ax.set_xlabel("principal component 1")
            ax.set_title("the same windows coloured by their label in the file")
            ax.legend(fontsize=7, markerscale=2)
        fig.suptitle(title)
        fig.tight_layout()
        return _png(fig)
    finally:
        plt.close(fig)
