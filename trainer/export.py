"""Export a fitted :class:`~trainer.pipeline.Pipeline` as ONE ONNX graph with metadata.

``window`` float32 ``[batch, W, C]`` -> feature families -> ``Concat`` -> scaling
(``Sub``/``Mul`` with the training mean and 1/std) -> sigmoid network -> ``probabilities``
float32 ``[batch, classes]``; ``metadata_props`` as :mod:`edge.contract` requires.

Why ``onnx.helper`` (through :class:`trainer.graph.GraphBuilder`) and not onnxscript:
each feature family writes its graph nodes a few lines below the numpy code they mirror,
op for op, with explicit readable tensor names (``spectral_dft``, ``stats_var``,
``scaled_features``) that show up as such in Netron; onnxscript would let us write the
graph side as Python functions, but it adds a dependency that moves fast, its traced
functions need an inlining step to give a flat graph with names we choose, and our
graphs are small enough (tens of nodes) that the direct form reads at least as well.
The builder runs ``onnx.checker`` with ``full_check=True`` on every model.
"""

from __future__ import annotations

import json
from typing import Any

import onnx

from edge import contract
from edge.atomic import write_file
from trainer.graph import GraphBuilder, float_input


def build_model(
    pipeline,
    *,
    channels: list[str],
    window: int,
    hop: int,
    name: str,
    version: str,
    sample_rate_hz: float | None = None,
    training: dict[str, Any] | None = None,
    quantization: dict[str, Any] | None = None,
    fold_scaling: bool = True,
) -> onnx.ModelProto:
    """The fitted pipeline as a checked ONNX model with contract metadata.

    Parameters
    ----------
    pipeline : Pipeline
        Fitted; its window length and channel count must match ``window``/``channels``.
    channels : list of str
        Channel names in input order.
    window, hop : int
        Samples per window and between windows (for the daemon).
    name, version : str
        Model identity.
    sample_rate_hz : float, optional
        Sampling rate of the training data, when known.
    training : dict, optional
        Training data summary for the metadata.
    quantization : dict, optional
        What quantization was applied (``{"type": "float32"}`` for the float model).
    fold_scaling : bool
        Fold the feature scaling into the network's first layer (the float model) or
        keep it as nodes (the source of the int8 model; see ``Pipeline.to_onnx``).
    """
    if pipeline.window_ != window or pipeline.n_channels_ != len(channels):
        raise ValueError(
            f"pipeline was fitted on windows [{pipeline.window_}, {pipeline.n_channels_}], "
            f"metadata says [{window}, {len(channels)}]"
        )
    g = GraphBuilder(name or "sigmoid_edge")
    probs = pipeline.to_onnx(g, contract.INPUT_NAME, fold_scaling=fold_scaling)
    g.rename(probs, contract.OUTPUT_NAME)
    meta = {
        contract.LABELS: [str(c) for c in pipeline.classes_],
        contract.CHANNELS: list(channels),
        contract.WINDOW: int(window),
        contract.HOP: int(hop),
        contract.NAME: name,
        contract.VERSION: version,
        contract.FEATURES: pipeline.describe(),
        contract.TRAINING: training or {},
        contract.QUANTIZATION: quantization or {"type": "float32"},
    }
    if sample_rate_hz:
        meta[contract.SAMPLE_RATE_HZ] = float(sample_rate_hz)
    if getattr(pipeline, "input_min_", None) is not None:
        meta[contract.INPUT_RANGE] = {"min": [float(v) for v in pipeline.input_min_],
                                      "max": [float(v) for v in pipeline.input_max_]}
    # A network may add outputs after `probabilities` (an anomaly score, a cluster index)
    # and the metadata that goes with them: it names them, it emitted them in to_onnx.
    network = getattr(pipeline, "network_", None)
    extra_outputs = list(getattr(network, "onnx_outputs", lambda: [])())
    meta.update(getattr(network, "onnx_metadata", lambda: {})())
    model = g.model(
        [float_input(contract.INPUT_NAME, ["batch", window, len(channels)])],
        [float_input(contract.OUTPUT_NAME, ["batch", len(pipeline.classes_)]), *extra_outputs],
        metadata=contract.encode_metadata(meta),
        doc="window -> features -> scaling -> sigmoid network -> probabilities",
    )
    check_operators(model)
    return model


def check_operators(model: onnx.ModelProto) -> None:
    """Fail unless every operator of ``model`` is one every edge runtime runs.

    Raises
    ------
    contract.ContractError
        Naming the operators outside :data:`edge.contract.SUPPORTED_OPS`: a Pi with the
        numpy runtime (32-bit Raspberry Pi OS, Pi Zero) could not load the model. Add the
        operator to the numpy runtime and to the list, or emit supported ones.
    """
    bad = sorted(contract.model_ops(model.SerializeToString()) - contract.SUPPORTED_OPS)
    if bad:
        raise contract.ContractError(
            f"model {model.graph.name!r} uses operator(s) "
            f"{', '.join(contract.op_name(*op) for op in bad)} outside "
            "edge.contract.SUPPORTED_OPS: the daemon would refuse it and the numpy runtime "
            "(32-bit Raspberry Pi OS, Pi Zero) could not run it; implement them in "
            "edge/runtime/numpy_backend.py and add them "
            "to the list, or emit supported operators")


def set_metadata(model: onnx.ModelProto, key: str, value: Any) -> None:
    """Set (or replace) one metadata entry, encoded as the contract says."""
    encoded = str(value) if key in contract.STRING_KEYS else json.dumps(value, sort_keys=True)
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = encoded
            return
    model.metadata_props.add(key=key, value=encoded)


def save_model(model: onnx.ModelProto, path) -> int:
    """Serialize ``model`` atomically to ``path``; return its size in bytes."""
    data = model.SerializeToString()
    write_file(path, data)
    return len(data)
