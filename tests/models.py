"""Small ONNX models that follow the trainer/edge contract, for daemon tests and benchmarks.

``window [B, W, C] -> ReduceMean over time -> MatMul -> Add -> Softmax -> probabilities``,
built with :class:`trainer.graph.GraphBuilder` (where ``onnx`` is missing, e.g. on a 32-bit
ARM board, with :mod:`tests.onnx_writer`, which writes the same bytes) and metadata from
:func:`edge.contract.encode_metadata`. The weights make the label depend on the mean of
the channels in an obvious way, so tests can steer the label with their input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.contract import INPUT_NAME, OUTPUT_NAME, encode_metadata

try:
    from trainer.graph import GraphBuilder, float_input
except ImportError:  # no onnx here (deploy/armhf/verify.sh): the bytes onnx would write
    from tests.onnx_writer import GraphBuilder, float_input

LABELS = ("low", "mid", "high")


def mean_model(
    path: Path,
    *,
    channels=("x", "y", "z"),
    labels=LABELS,
    window: int = 8,
    hop: int = 4,
    sample_rate_hz: float | None = 100.0,
    name: str = "test-mean",
    version: str = "1",
    weights: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    input_name: str = INPUT_NAME,
) -> Path:
    """Write a contract-following model to ``path`` and return the path.

    With the default weights, the logit of label ``k`` is ``4 * k * m - 2 * k**2``, where ``m``
    is the mean over time and channels: the label is ``low`` for ``m`` < 0.5, ``mid`` for
    0.5 < ``m`` < 1.5 and ``high`` above (for three labels).
    """
    c, k = len(channels), len(labels)
    if weights is None:
        weights = np.tile(4.0 * np.arange(k, dtype=np.float32) / c, (c, 1))
    if bias is None:
        bias = -2.0 * np.arange(k, dtype=np.float32) ** 2
    g = GraphBuilder(name)
    mean = g.op("ReduceMean", [input_name, g.const("time_axis", np.array([1], np.int64))],
                name="mean_over_time", keepdims=0)
    logits = g.op("Add", [g.op("MatMul", [mean, g.const("weights", weights)], name="dense"),
                          g.const("bias", bias)], name="logits")
    probs = g.op("Softmax", [logits], name="softmax", axis=-1)
    g.rename(probs, OUTPUT_NAME)
    meta = {"labels": list(labels), "channels": list(channels), "window": window, "hop": hop,
            "name": name, "version": version}
    if sample_rate_hz is not None:
        meta["sample_rate_hz"] = sample_rate_hz
    model = g.model([float_input(input_name, [None, window, c])],
                    [float_input(OUTPUT_NAME, [None, k])], encode_metadata(meta))
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    return path


def offline_labels(path: Path, windows: np.ndarray) -> list[str]:
    """Labels for ``windows`` [N, W, C], read straight from the file (onnxruntime when it is
    installed, else the numpy runtime)."""
    from edge.contract import decode_metadata
    from edge.runtime import open_session

    session = open_session(str(path))
    info = decode_metadata(session.get_modelmeta().custom_metadata_map)
    probs = session.run([OUTPUT_NAME], {INPUT_NAME: windows.astype(np.float32)})[0]
    return [info.labels[i] for i in probs.argmax(axis=1)]
