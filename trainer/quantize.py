"""int8 variants of an exported model, measured, and the choice among them.

Measure, do not assume. For each model ``sigmoid-train fit`` builds these variants with
``onnxruntime.quantization`` and measures label agreement with the float model,
accuracy, size and single-thread latency (batch 1 and per window at batch 64):

- ``dynamic``: weights int8, activation ranges computed per call. Small and often fast,
  but a window's result depends on the other windows in its batch (the range is taken
  over the batch), so it is measured for the report and never chosen: the daemon
  batches windows of different devices together.
- ``static_{qdq,qop}_{tensor,channel}[_net]``: static quantization, activation ranges
  calibrated once on training windows (MinMax), in QDQ or QOperator format, weights per
  tensor or per output channel; ``_net`` quantizes only the network and keeps feature
  extraction in float (the spectral log-energies and statistics are where int8 rounding
  hurts most). Nodes named with a prefix in :data:`FLOAT_NODE_PREFIXES` (the conv
  family) stay float in every variant.
- ``weight_only_{tensor,channel}_net``: only the network's MatMul/Gemm weights are stored
  as int8 (symmetric, one scale per tensor or per output channel) and turned back into
  float by a ``DequantizeLinear`` node; the graph keeps every activation float. No
  calibration, so nothing depends on the training ranges; the weight bytes shrink about
  4x and the weight rounding is at most half a step (``max|w| / 254``). Static variants
  also round the activations to calibrated ranges, which on some data sets cost more than
  1% agreement on test windows outside the training ranges (BENCHMARKS.md). Note that
  onnxruntime 1.27 (CPU, default options) fuses ``DequantizeLinear`` + ``MatMul`` into
  its ``MatMulNBits`` kernel, which quantizes each window's activations to int8 at run
  time, one row at a time: still per window (the batch-independence check measures it),
  and the agreement figures are taken on what onnxruntime runs.

Every candidate is checked for batch independence (each window alone gives bit-identical
probabilities to the same window inside a batch). Agreement is measured twice: on the
training windows, and held out from calibration (calibrate on one half, check the other,
and back). Among the batch-independent candidates whose label agreement with the float
model is at least :data:`MIN_AGREEMENT` both ways and whose
accuracy is at most :data:`MAX_ACCURACY_LOSS` below float, the one with the lowest
batch-1 latency wins (ties within 10% go to the smaller file); if none qualifies, the
highest agreement wins and the report says the goal was missed. Only the variants the
choice compares on latency are timed (``latency_us_batch1``), and a static variant that
cannot be chosen skips its held-out calibrations (:data:`HELDOUT_MARGIN`).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge import contract
from trainer.sessions import batch_independent, latency_us, run, session

log = logging.getLogger(__name__)

MIN_AGREEMENT = 0.99
MAX_ACCURACY_LOSS = 0.01
# Variants whose held-out mean |p_int8 - p_float| is within this factor of the best compete
# on latency. Label agreement on a few dozen training windows cannot tell them apart, but
# quantizing the features measured 3x the probability error of keeping them in float and
# 0.93 test agreement on synthetic vibration data (1.00 on the training windows).
ERROR_SLACK = 1.5
# Graph tensors where feature extraction ends and the network begins (see pipeline.py):
# the scaled features when scaling is kept as nodes, else the features.
NETWORK_INPUTS = ("scaled_features", "features")
CALIBRATION_WINDOWS = 512
# A static variant's held-out check (two more calibrations and builds, most of the int8
# time) is skipped when it cannot be chosen: when it already misses the agreement or
# accuracy bar, or when its error on the calibration windows is more than this many times
# the error it would need to compete on latency (ERROR_SLACK times the best so far). The
# variants without calibration are measured first and set that bar; weight-only ones
# usually reach 1e-5, the static ones about 1e-3 (BENCHMARKS.md, "Sixth pass"). Its
# calibration windows are its best case, so its held-out error is not expected below
# half of that.
HELDOUT_MARGIN = 2.0
# Feature nodes that stay float in every variant, by node-name prefix. The conv family's
# ``Conv > bias`` comparisons move under int8 (uint8 window, int8 kernels): on
# ItalyPowerDemand test windows int8 Conv gave 99.61% agreement and 0.965 accuracy against
# 99.81% and 0.967 with Conv in float, and it was not faster (bench/bench_conv.py).
FLOAT_NODE_PREFIXES = ("conv_",)
FORMATS = ("qdq", "qop")
GRANULARITIES = ("tensor", "channel")
WEIGHT_ONLY = "weight_only"
# Nodes whose weight initializer becomes int8 in the weight-only variants, with the input
# index of the weight.
WEIGHT_OPS = {"MatMul": 1, "Gemm": 1}


class _Windows:
    """Calibration data for ``quantize_static``: training windows, 32 per call."""

    def __init__(self, X: np.ndarray, batch: int = 32):
        self._it: Iterator = iter(range(0, len(X), batch))
        self.X, self.batch = X, batch

    def get_next(self):
        i = next(self._it, None)
        return None if i is None else {contract.INPUT_NAME: self.X[i:i + self.batch]}

    def rewind(self):
        self._it = iter(range(0, len(self.X), self.batch))


def network_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes downstream of the network input (the network, not the features)."""
    produced = {o for node in model.graph.node for o in node.output}
    start = next((t for t in NETWORK_INPUTS if t in produced), None)
    if start is None:
        raise ValueError(f"model has none of the tensors {NETWORK_INPUTS}: not a pipeline model")
    tensors = {start}
    names = []
    for node in model.graph.node:  # nodes are in topological order
        if any(i in tensors for i in node.input):
            names.append(node.name)
            tensors.update(node.output)
    return names


def build_variant(model: onnx.ModelProto, name: str, X_cal: np.ndarray) -> onnx.ModelProto:
    """One int8 variant of ``model`` (see the module docstring for ``name``)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if name.startswith(WEIGHT_ONLY + "_"):  # no calibration: X_cal is not used
        if name not in variant_names():
            raise ValueError(f"unknown int8 variant {name!r}: expected one of {variant_names()}")
        return weight_only(model, per_channel=name.split("_")[2] == "channel")
    with tempfile.TemporaryDirectory(prefix="sigmoid-quant-") as tmp, _quiet_root_logger():
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        if name == "dynamic":
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        else:
            _, fmt, gran, *net = name.split("_")
            nodes = network_nodes(model) if net else None
            keep_float = [n.name for n in model.graph.node
                          if n.name.startswith(FLOAT_NODE_PREFIXES)]
            quantize_static(
                src, dst, _Windows(X_cal),
                quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                per_channel=gran == "channel",
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=nodes,
                nodes_to_exclude=keep_float or None,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
        out = onnx.load(dst)
    # quantize_* keeps metadata_props; keep opset/IR as the tools wrote them.
    return out


def _calibrated(name: str) -> bool:
    """True for the variants whose model depends on the calibration windows (static)."""
    return name.startswith("static_")


def weight_only(model: onnx.ModelProto, per_channel: bool = True) -> onnx.ModelProto:
    """A copy of ``model`` whose network weights are int8 behind ``DequantizeLinear``.

    Parameters
    ----------
    model : onnx.ModelProto
        A pipeline model (see :func:`network_nodes`).
    per_channel : bool
        One symmetric scale per output channel (column of a MatMul weight), else one per
        tensor.

    Returns
    -------
    onnx.ModelProto
        The model with each float weight ``W`` of a network MatMul/Gemm replaced by the
        initializers ``W_quantized`` (int8), ``W_scale`` and ``W_zero_point`` (zeros) and a
        node ``W_dequantize`` that outputs ``W`` in float, so the consumers are unchanged.
    """
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    network = set(network_nodes(model))
    weights: dict[str, int] = {}  # weight name -> output-channel axis
    for node in graph.node:
        index = WEIGHT_OPS.get(node.op_type)
        if node.name not in network or index is None or len(node.input) <= index:
            continue
        name = node.input[index]
        tensor = inits.get(name)
        if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT or len(tensor.dims) != 2:
            continue
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        axis = 0 if node.op_type == "Gemm" and trans_b else 1
        if weights.setdefault(name, axis) != axis:  # shared with another layout: per tensor
            weights[name] = -1
    if not weights:
        raise ValueError("the network has no float MatMul/Gemm weight to quantize")
    if not any(o.domain in ("", "ai.onnx") and o.version >= 13 for o in out.opset_import):
        raise ValueError("per-axis DequantizeLinear needs ONNX opset >= 13")
    dequantize = []
    for name, axis in weights.items():
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        channel = per_channel and axis >= 0
        amax = np.abs(w).max(axis=1 - axis) if channel else np.abs(w).max()
        # Symmetric [-127, 127]: zero point 0, so a zero weight stays exactly zero.
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(w / (np.expand_dims(scale, 1 - axis) if channel else scale)),
                    -127, 127).astype(np.int8)
        graph.initializer.remove(inits[name])
        graph.initializer.extend([
            numpy_helper.from_array(q, f"{name}_quantized"),
            numpy_helper.from_array(scale, f"{name}_scale"),
            numpy_helper.from_array(np.zeros_like(scale, np.int8), f"{name}_zero_point"),
        ])
        dequantize.append(helper.make_node(
            "DequantizeLinear", [f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"],
            [name], name=f"{name}_dequantize", **({"axis": axis} if channel else {})))
    nodes = dequantize + list(graph.node)  # before their consumers: topological order
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(out, full_check=True)
    return out


@contextlib.contextmanager
def _quiet_root_logger():
    """The quantization tools log advice ("consider pre-processing") on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def variant_names() -> list[str]:
    names = ["dynamic"]
    for fmt in FORMATS:
        for gran in GRANULARITIES:
            names += [f"static_{fmt}_{gran}", f"static_{fmt}_{gran}_net"]
    return names + [f"{WEIGHT_ONLY}_{gran}_net" for gran in GRANULARITIES]


@dataclass
class Measured:
    name: str
    model: onnx.ModelProto
    figures: dict[str, Any]


def measure(model: onnx.ModelProto, X_eval: np.ndarray, y_eval: np.ndarray | None,
            labels: list[str], reference: np.ndarray, *,
            reference_probs: np.ndarray | None = None) -> dict:
    """Agreement with ``reference`` labels, accuracy, size, batch independence (latency:
    :func:`time_batch1`, for the variants the choice compares on it)."""
    sess = session(model)
    P = run(sess, X_eval)
    pred = P.argmax(axis=1)
    figures: dict[str, Any] = {
        "agreement": float((pred == reference).mean()),
        "probability_error": float(np.abs(P - reference_probs).mean())
        if reference_probs is not None else 0.0,
        "size_bytes": len(model.SerializeToString()),
        "batch_independent": batch_independent(sess, X_eval),
        "nodes": len(model.graph.node),
    }
    if y_eval is not None:
        figures["accuracy"] = float((np.asarray(labels)[pred] == y_eval).mean())
    return figures


def time_batch1(model: onnx.ModelProto, figures: dict, window: np.ndarray) -> None:
    """Add ``latency_us_batch1`` to ``figures``. Batch 1 only: the choice is taken on it, and
    the report's "latency" has the chosen model's batch-64 figure (timing it for every
    variant cost about 1 s per fit)."""
    figures["latency_us_batch1"] = round(latency_us(session(model), window, 1), 2)


def choose(float_model: onnx.ModelProto, X_cal: np.ndarray, X_eval: np.ndarray,
           y_eval: np.ndarray | None, labels: list[str],
           candidates: list[str] | None = None,
           reference_model: onnx.ModelProto | None = None) -> tuple[onnx.ModelProto, dict]:
    """Build, measure and choose an int8 variant of ``float_model``.

    Parameters
    ----------
    float_model : onnx.ModelProto
        The exported float model.
    X_cal : ndarray
        Training windows for calibration (at most :data:`CALIBRATION_WINDOWS` are used).
    X_eval, y_eval : ndarray
        Windows (and labels, optional) to measure agreement and accuracy on.
    labels : list of str
        Class labels in output order.
    candidates : list of str, optional
        Variant names to try (default: all of :func:`variant_names`).
    reference_model : onnx.ModelProto, optional
        The float model the int8 one must agree with (default ``float_model``; the fit
        passes the deployed float model, whose scaling is folded into the network).

    Returns
    -------
    model : onnx.ModelProto
        The chosen int8 model, with metadata ``quantization`` set to the choice and figures.
    report : dict
        ``chosen``, ``reason``, the float figures and every variant's figures.
    """
    from trainer.export import check_operators, set_metadata

    rng = np.random.default_rng(0)
    if len(X_cal) > CALIBRATION_WINDOWS:
        X_cal = X_cal[np.sort(rng.choice(len(X_cal), CALIBRATION_WINDOWS, replace=False))]
    X_cal = np.ascontiguousarray(X_cal, np.float32)
    X_eval = np.ascontiguousarray(X_eval, np.float32)
    reference_model = reference_model or float_model
    ref_sess = session(reference_model)
    P_ref = run(ref_sess, X_eval)
    ref = P_ref.argmax(axis=1)
    float_fig = measure(reference_model, X_eval, y_eval, labels, ref, reference_probs=P_ref)
    time_batch1(reference_model, float_fig, X_eval[0])
    # Cross-calibration: calibrate on one half, measure agreement on the other, and back.
    # Agreement on the calibration windows themselves flatters variants that quantize the
    # features (their ranges fit those windows exactly): measured 1.00 there, 0.93 on test.
    halves = np.array_split(rng.permutation(len(X_cal)), 2) if len(X_cal) >= 8 else None
    P_cal = run(ref_sess, X_cal) if halves else None

    def worst_agreement(f) -> float:
        return min(f["agreement"], f.get("heldout_agreement", 1.0))

    def ok(f) -> bool:
        loss = float_fig.get("accuracy", 0) - f.get("accuracy", 0) if y_eval is not None else 0
        return worst_agreement(f) >= MIN_AGREEMENT and loss <= MAX_ACCURACY_LOSS + 1e-12

    def error(f) -> float:
        return f.get("heldout_probability_error", f["probability_error"])

    def cannot_win(f) -> bool:
        """A static variant that no held-out figure could make the choice (see
        :data:`HELDOUT_MARGIN`); only once some variant meets the bar."""
        good = [error(v.figures) for v in variants.values()
                if v.model is not None and v.figures["batch_independent"] and ok(v.figures)]
        if not good:
            return False
        bar = ERROR_SLACK * min(good) + 1e-4
        return (not f["batch_independent"] or not ok(f)
                or f["probability_error"] > HELDOUT_MARGIN * bar)

    names = list(candidates or variant_names())
    variants: dict[str, Measured] = {}
    for name in sorted(names, key=_calibrated):  # uncalibrated first: they set the bar
        try:
            m = build_variant(float_model, name, X_cal)
            fig = measure(m, X_eval, y_eval, labels, ref, reference_probs=P_ref)
            if halves and _calibrated(name) and cannot_win(fig):
                fig["heldout"] = "skipped: cannot be chosen (HELDOUT_MARGIN)"
            elif halves:
                hits, err = 0, 0.0
                # Variants without calibration come out the same from either half: one
                # session of the model built above serves both checks.
                same = None if _calibrated(name) else session(m)
                for fit_idx, check_idx in (halves, halves[::-1]):
                    sess = same if same is not None else session(
                        build_variant(float_model, name, X_cal[fit_idx]))
                    Q = run(sess, X_cal[check_idx])
                    hits += int((Q.argmax(axis=1) == P_cal[check_idx].argmax(axis=1)).sum())
                    err += float(np.abs(Q - P_cal[check_idx]).sum())
                fig["heldout_agreement"] = hits / len(X_cal)
                fig["heldout_probability_error"] = err / P_cal.size
            variants[name] = Measured(name, m, fig)
        except Exception as exc:  # a variant the tools cannot build is reported, not fatal
            log.warning("int8 variant %s failed: %s", name, exc)
            variants[name] = Measured(name, None, {"error": str(exc)})
    variants = {n: variants[n] for n in names}  # the report in the usual order
    usable = {n: v for n, v in variants.items()
              if v.model is not None and v.figures["batch_independent"]}
    if not usable:
        raise RuntimeError("no batch-independent int8 variant could be built: "
                           + "; ".join(f"{n}: {v.figures}" for n, v in variants.items()))

    def timed(candidates) -> None:
        # Timing is a third of the variants' cost; a variant that cannot be chosen on
        # agreement and error is not timed (its latency could not change the choice).
        for v in candidates:
            time_batch1(v.model, v.figures, X_eval[0])

    good = {n: v for n, v in usable.items() if ok(v.figures)}
    if good:
        least = min(error(v.figures) for v in good.values())
        close = [v for v in good.values()
                 if error(v.figures) <= ERROR_SLACK * least + 1e-4]
        timed(close)
        fastest = min(v.figures["latency_us_batch1"] for v in close)
        near = [v for v in close if v.figures["latency_us_batch1"] <= 1.1 * fastest]
        best = min(near, key=lambda v: (error(v.figures), v.figures["size_bytes"]))
        reason = (f"batch-independent, agreement >= {MIN_AGREEMENT} (on the training windows "
                  f"and held out from calibration), accuracy loss <= {MAX_ACCURACY_LOSS}, "
                  f"held-out probability error within {ERROR_SLACK}x of the best; then the "
                  "fastest at batch 1 (within 10%: lower error, then smaller file)")
        goal_met = True
    else:
        timed(usable.values())
        best = max(usable.values(), key=lambda v: (worst_agreement(v.figures),
                                                    -v.figures["latency_us_batch1"]))
        reason = (f"no variant reached agreement {MIN_AGREEMENT} with accuracy loss <= "
                  f"{MAX_ACCURACY_LOSS}: highest agreement among batch-independent variants")
        goal_met = False
    summary = {
        "type": "int8",
        "method": best.name,
        "calibration_windows": int(len(X_cal)),
        "agreement": best.figures["agreement"],
        "heldout_agreement": best.figures.get("heldout_agreement"),
        "goal_met": goal_met,
        "float": float_fig,
        "chosen": best.figures,
    }
    report = {"chosen": best.name, "reason": reason, "goal_met": goal_met,
              "float": float_fig,
              "variants": {n: v.figures for n, v in variants.items()}}
    set_metadata(best.model, contract.QUANTIZATION, summary)
    onnx.checker.check_model(best.model, full_check=True)
    check_operators(best.model)
    return best.model, report
