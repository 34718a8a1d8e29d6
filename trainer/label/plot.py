"""One captured window as a PNG: each channel over time, drawn by matplotlib on the server."""

from __future__ import annotations

import io

import numpy as np


def window_png(doc: dict, *, width_px: int = 900, height_px: int = 420) -> bytes:
    """Plot a capture's channels against time (seconds when the rate is known).

    Parameters
    ----------
    doc : dict
        A stored capture: ``samples`` [window, channels], ``channels``, optional
        ``sample_rate_hz``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global state across threads

    x = np.asarray(doc["samples"], dtype=np.float64)
    rate = doc.get("sample_rate_hz")
    t = np.arange(len(x)) / rate if rate else np.arange(len(x))
    n = x.shape[1]
    dpi = 100
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, layout="constrained")
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    colours = matplotlib.colormaps["tab10"].colors
    for i, (ax, name) in enumerate(zip(axes, doc["channels"], strict=True)):
        ax.plot(t, x[:, i], color=colours[i % len(colours)], linewidth=1.2)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
    axes[-1].set_xlabel("seconds" if rate else "sample")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
