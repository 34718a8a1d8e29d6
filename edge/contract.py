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
from dataclasses import dataclass, field
from typing import Any

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

# The operators a model may use: what every edge runtime runs (the numpy runtime runs exactly
# these, with the attributes the trainer writes; edge/runtime/numpy_backend.py) and what the
# trainer's export checks every model against. Operators of onnxruntime's contrib domain
# (written by its quantizer in QOperator format) are named "com.microsoft.<Op>".
SUPPORTED_OPS = frozenset({
    # features, scaling and the network (float)
    "Add", "ArgMin", "Cast", "Concat", "Conv", "Div", "Greater", "Identity", "Log", "MatMul",
    "Mul", "Pad", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Reshape", "Sigmoid",
    "Slice", "Softmax", "Sqrt", "Sub", "Transpose", "Unsqueeze",
    # int8 (the static QDQ/QOperator and weight-only variants the trainer chooses among)
    "DequantizeLinear", "QuantizeLinear", "QLinearMatMul",
    "com.microsoft.QLinearAdd", "com.microsoft.QLinearConcat", "com.microsoft.QLinearMul",
    "com.microsoft.QLinearSigmoid", "com.microsoft.QLinearSoftmax",
})

REQUIRED_KEYS = (LABELS, CHANNELS, WINDOW, HOP, NAME, VERSION)
# Keys whose values are plain strings; every other value is JSON-encoded.
STRING_KEYS = frozenset({NAME, VERSION})


class ContractError(ValueError):
    """A model file does not follow the trainer/edge contract."""


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


def unsupported_ops(op_types) -> list[str]:
    """The entries of ``op_types`` (``"domain.Op"`` outside the standard domain) that are
    not in :data:`SUPPORTED_OPS`, sorted."""
    return sorted(set(op_types) - SUPPORTED_OPS)


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
