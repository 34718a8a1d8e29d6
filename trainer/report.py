"""``report.png``: the training loss curve and the confusion matrix (matplotlib, headless).

A model with a pruned conv pool gets a third panel: cross-validated accuracy against the
number of features kept at each detachment step, with the chosen size marked.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np


def figure_png(loss_curve: Sequence[float], confusion: np.ndarray, labels: Sequence[str],
               title: str, confusion_title: str, pruning: Sequence[dict] = ()) -> bytes:
    """Render the panels and return PNG bytes.

    ``pruning``: the ``pruning_`` records of pruned families (report.json's ``pruning``);
    those with validation accuracies get the accuracy-vs-features panel.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display on a build server
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion)
    curves = [p for p in pruning if p.get("steps") and "validation_accuracy" in p["steps"][0]]
    fig, axes = plt.subplots(1, 3 if curves else 2, figsize=(16.5 if curves else 11, 4.5))
    ax_loss, ax_cm = axes[0], axes[1]
    try:
        for p in curves:
            n = [s["n_features"] for s in p["steps"]]
            acc = [s["validation_accuracy"] for s in p["steps"]]
            axes[2].plot(n, acc, marker=".")
            axes[2].axvline(p["kept"], color="tab:red", linestyle="--",
                            label=f"kept {p['kept']} of {p['pool']}")
            if p.get("budget_us") and p.get("largest_within_budget"):
                axes[2].axvline(p["largest_within_budget"], color="grey", linestyle=":",
                                label=f"largest within {p['budget_us']:g} us")
            axes[2].set_xscale("log")
            axes[2].set_xlabel("features kept")
            axes[2].set_ylabel("cross-validated accuracy (ridge)")
            axes[2].set_title("feature detachment")
            axes[2].grid(alpha=0.3)
            axes[2].legend(fontsize=8)
        if len(loss_curve):
            ax_loss.plot(np.arange(1, len(loss_curve) + 1), loss_curve)
            ax_loss.set_yscale("log" if min(loss_curve) > 0 else "linear")
        ax_loss.set_xlabel("epoch")
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
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        return buf.getvalue()
    finally:
        plt.close(fig)
