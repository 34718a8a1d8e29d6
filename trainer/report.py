"""``report.png``: the training loss curve and the confusion matrix (matplotlib, headless)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np


def figure_png(loss_curve: Sequence[float], confusion: np.ndarray, labels: Sequence[str],
               title: str, confusion_title: str) -> bytes:
    """Render the two panels and return PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display on a build server
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion)
    fig, (ax_loss, ax_cm) = plt.subplots(1, 2, figsize=(11, 4.5))
    try:
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
