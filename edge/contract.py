"""The contract between trainer and edge: what an ONNX model file must carry.

The daemon knows nothing about a model beyond what the file says. The trainer writes
files with :func:`encode_metadata`; the edge reads them back with :func:`decode_metadata`
and checks a loaded session with :func:`check_session`; both run models through
:func:`edge.runtime.open_session`, and every model's operators must be in
:data:`SUPPORTED_OPS`. The trainer imports this module, never the reverse.

See ``ARCHITECTURE.md``: input ``window`` float32 ``[batch, window, channels]``, output
``probabilities`` float32 ``[batch, classes]`` (more outputs may follow), and
``metadata_props`` with JSON-encoded values where a value is not a plain string.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from edge.protowire import fields

INPUT_NAME = "window"
OUTPUT_NAME = "probabilities"
ANOMALY_OUTPUT = "anomaly_score"

# metadata_props keys
LABELS = "labels"
CHANNELS = "channels"
WINDOW = "window"
HOP = "hop"
SAMPLE_RATE_HZ = "sample_rate_hz"
NAME = "name"
VERSION = "version"
FEATURES = "features"
TRAINING = "training"
QUANTIZATION = "quantization"
ANOMALY_THRESHOLD = "anomaly_threshold"
# {"min": [per channel], "max": [per channel]}: the raw sample values the model was trained
# on. Optional; the daemon uses it to tell a broken model from hostile input (README,
# "Reliability and security").
INPUT_RANGE = "input_range"

REQUIRED_KEYS = (LABELS, CHANNELS, WINDOW, HOP, NAME, VERSION)
# Keys whose values are plain strings; every other value is JSON-encoded.
STRING_KEYS = frozenset({NAME, VERSION})


class ContractError(ValueError):
    """A model file does not follow the trainer/edge contract."""


# The operators the trainer's exporter and quantizer emit, across every feature family,
# the anomaly and cluster heads and every int8 variant it can ship (static QOperator and
# QDQ, weight-only), as (domain, op_type) with "" for the default ONNX domain. The daemon
# loads no model with another operator unless the operator allows it (``allow_ops``), so a
# signed graph with a Loop of 1e12 iterations never runs. The numpy runtime
# (edge/runtime/numpy_backend.py) runs exactly these. Not here: the ``dynamic`` int8
# variant's DynamicQuantizeLinear, MatMulInteger and ConvInteger (the trainer measures that
# variant for its report and never ships it: it is batch-dependent). The trainer's export
# checks every model it writes against this list; tests/test_contract.py checks the
# trainer emits nothing outside it.
SUPPORTED_OPS: frozenset[tuple[str, str]] = frozenset(
    [("", op) for op in (
        "Add", "ArgMin", "Cast", "Concat", "Conv", "DequantizeLinear", "Div", "Gather",
        "Greater", "Identity", "Log", "MatMul", "Mul", "Pad", "QLinearMatMul",
        "QuantizeLinear", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Reshape",
        "Sigmoid", "Slice", "Softmax", "Sqrt", "Sub", "Transpose", "Unsqueeze",
    )]
    + [("com.microsoft", op) for op in (
        "QLinearAdd", "QLinearConcat", "QLinearMul", "QLinearSigmoid", "QLinearSoftmax",
    )]
)


def op_name(domain: str, op_type: str) -> str:
    """``"Loop"`` or ``"com.microsoft:QGemm"``: how messages and ``allow_ops`` name an op."""
    return f"{domain}:{op_type}" if domain else op_type


def parse_op_name(name: str) -> tuple[str, str]:
    """The inverse of :func:`op_name` (``"ai.onnx"`` is the default domain)."""
    domain, _, op_type = name.rpartition(":")
    return ("" if domain == "ai.onnx" else domain), op_type


def model_ops(data: bytes) -> set[tuple[str, str]]:
    """Every (domain, op_type) in a serialized ONNX model, subgraphs and functions included.

    Reads the protobuf wire format directly (no ``onnx`` package on a Pi), skipping
    initializers by their length, so it costs microseconds per node.

    Raises
    ------
    ContractError
        If the bytes are not a well-formed ONNX ModelProto.
    """
    ops: set[tuple[str, str]] = set()
    try:
        for number, _, value in fields(memoryview(data)):
            if number == 7 and isinstance(value, memoryview):  # ModelProto.graph
                _graph_ops(value, ops, 0)
            elif number == 25 and isinstance(value, memoryview):  # ModelProto.functions
                for f, _, sub in fields(value):
                    if f == 7 and isinstance(sub, memoryview):  # FunctionProto.node
                        _node_ops(sub, ops, 0)
    except ValueError as e:  # ProtoError, and a node name that is not UTF-8
        raise ContractError(f"not a loadable ONNX model: not a well-formed ONNX file ({e})") \
            from None
    return ops


def check_ops(data: bytes, extra: frozenset[tuple[str, str]] = frozenset()) -> None:
    """Refuse a model that uses an operator outside :data:`SUPPORTED_OPS` (plus ``extra``).

    Raises
    ------
    ContractError
        Naming the operators and the setting that allows them.
    """
    unknown = sorted(model_ops(data) - SUPPORTED_OPS - extra)
    if unknown:
        names = ", ".join(op_name(*op) for op in unknown)
        raise ContractError(
            f"the model uses operators the trainer never emits: {names}; if you trust this "
            "model, allow them with allow_ops in the daemon config"
        )


_MAX_GRAPH_DEPTH = 16


def _graph_ops(graph: memoryview, ops: set, depth: int) -> None:
    if depth > _MAX_GRAPH_DEPTH:
        raise ValueError("subgraphs nested too deep")
    for number, _, value in fields(graph):
        if number == 1 and isinstance(value, memoryview):  # GraphProto.node
            _node_ops(value, ops, depth)


def _node_ops(node: memoryview, ops: set, depth: int) -> None:
    op_type = domain = ""
    for number, _, value in fields(node):
        if not isinstance(value, memoryview):
            continue
        if number == 4:  # NodeProto.op_type
            op_type = bytes(value).decode("utf-8", "replace")
        elif number == 7:  # NodeProto.domain
            domain = bytes(value).decode("utf-8", "replace")
        elif number == 5:  # NodeProto.attribute: its graphs (Loop, If, Scan bodies)
            for f, _, g in fields(value):
                if f in (6, 11) and isinstance(g, memoryview):  # AttributeProto.g, .graphs
                    _graph_ops(g, ops, depth + 1)
    ops.add(("" if domain == "ai.onnx" else domain, op_type))


def input_bounds(info: ModelInfo, margin: float):
    """``(low, high)`` per channel: the training range widened by ``margin`` x its span.

    None when the model carries no usable :data:`INPUT_RANGE` (older models keep working).
    """
    value = info.extra.get(INPUT_RANGE)
    if not isinstance(value, dict):
        return None
    low, high = value.get("min"), value.get("max")
    n = len(info.channels)
    if not (isinstance(low, list) and isinstance(high, list) and len(low) == len(high) == n):
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
               for v in low + high):
        return None
    span = [max(h - lo, abs(h), abs(lo), 1e-6) for lo, h in zip(low, high, strict=True)]
    return ([lo - margin * s for lo, s in zip(low, span, strict=True)],
            [h + margin * s for h, s in zip(high, span, strict=True)])


@dataclass(frozen=True)
class ModelInfo:
    """What the edge knows about a model, read from its metadata.

    Attributes
    ----------
    labels : tuple of str
        Class names, in the order of the columns of ``probabilities``.
    channels : tuple of str
        Channel names, in the order of the last axis of ``window``.
    window : int
        Samples per window.
    hop : int
        Samples between the starts of consecutive windows.
    name, version : str
        Human-readable model identity.
    sample_rate_hz : float or None
        Sampling rate the model was trained at, when known.
    extra : dict
        Every other metadata entry, decoded from JSON where possible.
    """

    labels: tuple[str, ...]
    channels: tuple[str, ...]
    window: int
    hop: int
    name: str
    version: str
    sample_rate_hz: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def encode_metadata(values: dict[str, Any]) -> dict[str, str]:
    """Turn metadata values into the strings ``metadata_props`` holds.

    Plain-string keys (``name``, ``version``) stay as they are; every other value is
    JSON-encoded, so ``labels`` becomes ``'["idle", "run"]'`` and ``window`` ``'100'``.
    """
    missing = [k for k in REQUIRED_KEYS if k not in values]
    if missing:
        raise ContractError(f"model metadata is missing required keys {missing}")
    out = {}
    for key, value in values.items():
        if key in STRING_KEYS:
            out[key] = str(value)
        else:
            out[key] = json.dumps(value, sort_keys=True)
    return out


def decode_metadata(props: dict[str, str]) -> ModelInfo:
    """Read :class:`ModelInfo` from ``metadata_props`` (as onnxruntime's ``custom_metadata_map``).

    Raises
    ------
    ContractError
        If a required key is missing or a value has the wrong type, naming the key.
    """
    missing = [k for k in REQUIRED_KEYS if k not in props]
    if missing:
        raise ContractError(
            f"model metadata is missing required keys {missing}; "
            "re-export the model with `sigmoid-train fit`"
        )
    decoded: dict[str, Any] = {}
    for key, raw in props.items():
        if key in STRING_KEYS:
            decoded[key] = raw
            continue
        try:
            decoded[key] = json.loads(raw)
        except (TypeError, ValueError):
            decoded[key] = raw  # a foreign plain-string entry: keep it as it is
    labels = _string_list(decoded, LABELS)
    channels = _string_list(decoded, CHANNELS)
    window = _positive_int(decoded, WINDOW)
    hop = _positive_int(decoded, HOP)
    rate = decoded.get(SAMPLE_RATE_HZ)
    if rate is not None and (not isinstance(rate, (int, float)) or rate <= 0):
        raise ContractError(f"metadata {SAMPLE_RATE_HZ!r} must be a positive number, got {rate!r}")
    known = {LABELS, CHANNELS, WINDOW, HOP, NAME, VERSION, SAMPLE_RATE_HZ}
    return ModelInfo(
        labels=labels,
        channels=channels,
        window=window,
        hop=hop,
        name=decoded[NAME],
        version=decoded[VERSION],
        sample_rate_hz=None if rate is None else float(rate),
        extra={k: v for k, v in decoded.items() if k not in known},
    )


def check_session(session, info: ModelInfo) -> None:
    """Check that an onnxruntime session has the contract's inputs and outputs.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        The loaded model.
    info : ModelInfo
        Its decoded metadata; shapes are checked against it where they are static.

    Raises
    ------
    ContractError
        Naming the input or output that is wrong and what was expected.
    """
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        names = [i.name for i in inputs]
        raise ContractError(f"model must have exactly one input {INPUT_NAME!r}, has {names}")
    _check_shape(inputs[0], [None, info.window, len(info.channels)], "input")
    if inputs[0].type != "tensor(float)":
        raise ContractError(f"input {INPUT_NAME!r} must be float32, is {inputs[0].type}")
    outputs = {o.name: o for o in session.get_outputs()}
    if OUTPUT_NAME not in outputs:
        raise ContractError(f"model must have an output {OUTPUT_NAME!r}, has {sorted(outputs)}")
    _check_shape(outputs[OUTPUT_NAME], [None, len(info.labels)], "output")
    if ANOMALY_OUTPUT in outputs:
        _check_shape(outputs[ANOMALY_OUTPUT], [None], "output")
        if anomaly_threshold(info) is None:
            raise ContractError(
                f"model has an {ANOMALY_OUTPUT!r} output but no numeric {ANOMALY_THRESHOLD!r} "
                "in its metadata; re-export it with `sigmoid-train fit-anomaly` or `fit --anomaly`"
            )


def anomaly_threshold(info: ModelInfo) -> float | None:
    """The model's ``anomaly_threshold`` (a score above it is an anomaly), if it has one."""
    value = info.extra.get(ANOMALY_THRESHOLD)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


def _check_shape(arg, expected: list[int | None], what: str) -> None:
    shape = arg.shape
    if len(shape) != len(expected):
        raise ContractError(f"{what} {arg.name!r} must have shape {expected}, has {shape}")
    for got, want in zip(shape, expected, strict=True):
        # Symbolic or missing dimensions are fine: they are checked at run time.
        if want is not None and isinstance(got, int) and got != want:
            raise ContractError(
                f"{what} {arg.name!r} has shape {shape} but the metadata says {expected}"
            )


def _string_list(values: dict[str, Any], key: str) -> tuple[str, ...]:
    value = values[key]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ContractError(
            f"metadata {key!r} must be a non-empty JSON list of strings, got {value!r}"
        )
    if len(set(value)) != len(value):
        raise ContractError(f"metadata {key!r} has duplicate entries: {value!r}")
    return tuple(value)


def _positive_int(values: dict[str, Any], key: str) -> int:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ContractError(f"metadata {key!r} must be a positive integer, got {value!r}")
    return value
