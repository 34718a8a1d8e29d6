"""Run a model file with numpy alone: for Raspberry Pis onnxruntime has no wheel for.

:class:`NumpySession` reads the file with :mod:`edge.runtime.onnx_proto`, refuses at load
any operator outside :data:`edge.contract.SUPPORTED_OPS` (or an attribute value its kernel
does not implement), sorts the nodes topologically, folds every node whose inputs are all
constants (the ``DequantizeLinear`` of int8 weights, shape arithmetic) once, and then runs
the rest as a list of numpy calls, vectorised over the batch. It answers the part of
onnxruntime's ``InferenceSession`` the edge uses (``run``, ``get_inputs``, ``get_outputs``,
``get_modelmeta``), so the rest of the daemon does not care which runtime serves.

Numerics: float kernels compute in float32 like onnxruntime's (sums may round in another
order: differences of a few float32 ulps). int8 kernels follow the ONNX definitions (round
half to even, saturate); where onnxruntime fuses ``DequantizeLinear -> MatMul ->
QuantizeLinear`` into integer kernels, or runs weight-only ``DequantizeLinear -> MatMul`` as
``MatMulNBits`` (activations rounded to int8 per row), results may differ by a quantization
step: the parity tests bound that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge.contract import SUPPORTED_OPS
from edge.runtime.onnx_proto import TYPE_NAMES, Node, ProtoError, read_model

# Domains whose operators we run: the ONNX standard and onnxruntime's com.microsoft
# contrib ops that onnxruntime's quantizer writes in QOperator format.
DOMAINS = {"": "", "ai.onnx": "", "com.microsoft": "com.microsoft"}

Kernel = Callable[..., tuple]


class UnsupportedModel(ValueError):
    """The model uses an operator or attribute the numpy runtime does not run."""


@dataclass(frozen=True)
class Arg:
    """A graph input or output, as onnxruntime's ``NodeArg`` shows it."""

    name: str
    type: str
    shape: list


@dataclass(frozen=True)
class ModelMeta:
    custom_metadata_map: dict[str, str]


# ---------------------------------------------------------------- kernels
# Each kernel takes the node's attributes (a dict) and returns a function of its input
# arrays that returns a tuple of outputs. Attribute checks happen here, once, at load.

def _binary(fn):
    return lambda attrs: lambda a, b: (fn(a, b),)


def _unary(fn):
    return lambda attrs: lambda x: (fn(x),)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp overflow for x < -88 gives inf and 1 / inf = 0: the right limit, no warning wanted.
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _axes(attrs, given) -> tuple | None:
    """Reduction axes from the input (opset >= 18) or the attribute (older opsets)."""
    axes = given if given is not None else attrs.get("axes")
    if axes is None or len(axes) == 0:
        return None
    return tuple(int(a) for a in np.asarray(axes).reshape(-1))


def _reduce(fn):
    def make(attrs):
        keep = bool(attrs.get("keepdims", 1))
        if attrs.get("noop_with_empty_axes", 0):
            raise UnsupportedModel("noop_with_empty_axes=1 is not supported")

        def run(x, axes=None):
            return (fn(x, axis=_axes(attrs, axes), keepdims=keep),)
        return run
    return make


def _reduce_mean(x, axis, keepdims):
    # float32 accumulation like onnxruntime (numpy's default for float32 is float32 too).
    return np.mean(x, axis=axis, keepdims=keepdims, dtype=x.dtype if x.dtype.kind == "f"
                   else np.float32)


def _transpose(attrs):
    perm = attrs.get("perm")
    return lambda x: (np.transpose(x, perm),)


def _reshape(attrs):
    if attrs.get("allowzero", 0):
        raise UnsupportedModel("Reshape allowzero=1 is not supported")

    def run(x, shape):
        dims = [x.shape[i] if d == 0 else int(d) for i, d in enumerate(shape.tolist())]
        return (x.reshape(dims),)
    return run


def _unsqueeze(attrs):
    def run(x, axes=None):
        ax = _axes(attrs, axes)
        return (np.expand_dims(x, ax),)
    return run


def _concat(attrs):
    axis = attrs["axis"]
    return lambda *xs: (np.concatenate(xs, axis=axis),)


def _slice(attrs):
    def run(x, starts, ends, axes=None, steps=None):
        index = [slice(None)] * x.ndim
        axes = range(len(starts)) if axes is None else axes.tolist()
        steps = [1] * len(starts) if steps is None else steps.tolist()
        for a, s, e, st in zip(axes, starts.tolist(), ends.tolist(), steps, strict=True):
            index[a] = slice(s, e, st)
        return (x[tuple(index)],)
    return run


def _pad(attrs):
    mode = attrs.get("mode", "constant")
    if mode not in ("constant", "edge", "reflect"):
        raise UnsupportedModel(f"Pad mode={mode!r} is not supported")

    def run(x, pads, value=None, axes=None):
        if axes is not None:
            raise UnsupportedModel("Pad with axes is not supported")
        p = pads.tolist()
        n = len(p) // 2
        width = list(zip(p[:n], p[n:], strict=True))
        if mode == "constant":
            fill = 0 if value is None or value.size == 0 else value.item()
            return (np.pad(x, width, mode="constant", constant_values=fill),)
        return (np.pad(x, width, mode=mode),)
    return run


def _cast(attrs):
    dtype = _dtype(attrs["to"])
    return lambda x: (x.astype(dtype),)


def _dtype(code: int):
    from edge.runtime.onnx_proto import DTYPES

    if code not in DTYPES:
        raise UnsupportedModel(f"Cast to data type {code} is not supported")
    return DTYPES[code]


def _softmax(attrs):
    axis = attrs.get("axis", -1)

    def run(x):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return (e / e.sum(axis=axis, keepdims=True),)
    return run


def _argmin(attrs):
    axis, keep = attrs.get("axis", 0), bool(attrs.get("keepdims", 1))
    if attrs.get("select_last_index", 0):
        raise UnsupportedModel("ArgMin select_last_index=1 is not supported")
    return lambda x: (np.argmin(x, axis=axis, keepdims=keep).astype(np.int64),)


def _conv(attrs):
    """1-D convolution ``[B, C, T] * [K, C, k] -> [B, K, T']`` as one batched matmul."""
    if attrs.get("group", 1) != 1 or attrs.get("auto_pad", "NOTSET") != "NOTSET":
        raise UnsupportedModel("Conv with group != 1 or auto_pad is not supported")
    strides = attrs.get("strides", [1])
    if list(strides) != [1] * len(strides):
        raise UnsupportedModel("Conv with strides != 1 is not supported")
    dilation = attrs.get("dilations", [1])
    pads = attrs.get("pads", [0, 0])
    if len(dilation) != 1 or len(pads) != 2:
        raise UnsupportedModel("only 1-D Conv is supported")
    d = int(dilation[0])
    state: dict = {}

    def run(x, w, bias=None):
        k_out, c, k = w.shape
        xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[1]))) if pads[0] or pads[1] else x
        t = xp.shape[2] - d * (k - 1)
        # taps[b, c, j, t] = xp[b, c, t + j * d]: a strided view, copied once by reshape.
        s = xp.strides
        taps = np.lib.stride_tricks.as_strided(
            xp, (xp.shape[0], c, k, t), (s[0], s[1], s[2] * d, s[2]), writeable=False)
        w2 = state.get("w")
        if w2 is None or state.get("src") is not w:
            state["src"], state["w"] = w, w2 = w, np.ascontiguousarray(w.reshape(k_out, c * k))
        out = np.matmul(w2, taps.reshape(xp.shape[0], c * k, t))
        if bias is not None:
            out += bias.reshape(1, -1, 1)
        return (out,)
    return run


# int8 ---------------------------------------------------------------------------------

def _per_axis(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A per-axis scale/zero point shaped to broadcast along ``axis`` of an ndim tensor."""
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    shape = [1] * ndim
    shape[axis] = v.size
    return v.reshape(shape)


def _saturate(y: np.ndarray, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(y, info.min, info.max).astype(dtype)


def quantize(x, scale, zero_point, axis: int = 1) -> np.ndarray:
    """ONNX QuantizeLinear: ``saturate(round_half_even(x / scale) + zero_point)``."""
    zp = np.zeros((), np.uint8) if zero_point is None else zero_point
    s = _per_axis(scale, axis, x.ndim)
    z = _per_axis(zp, axis, x.ndim)
    y = np.rint(x / s) + z.astype(np.float32)
    return _saturate(y, zp.dtype)


def dequantize(x, scale, zero_point, axis: int = 1) -> np.ndarray:
    """ONNX DequantizeLinear: ``(x - zero_point) * scale`` in float32."""
    s = _per_axis(scale, axis, x.ndim)
    if zero_point is None:
        return x.astype(np.float32) * s
    z = _per_axis(zero_point, axis, x.ndim)
    return (x.astype(np.int32) - z.astype(np.int32)).astype(np.float32) * s


def _quantize_linear(attrs):
    axis = attrs.get("axis", 1)
    _no_block(attrs)
    return lambda x, s, z=None: (quantize(x, s, z, axis),)


def _dequantize_linear(attrs):
    axis = attrs.get("axis", 1)
    _no_block(attrs)
    return lambda x, s, z=None: (dequantize(x, s, z, axis),)


def _no_block(attrs):
    if attrs.get("block_size", 0):
        raise UnsupportedModel("blocked quantization (block_size) is not supported")
    if attrs.get("saturate", 1) != 1 or attrs.get("output_dtype", 0) not in (0, 2, 3):
        raise UnsupportedModel("only int8/uint8 quantization is supported")


def _qlinear_matmul(attrs):
    cache: dict = {}

    def centred(x, zero_point, axis):
        return x.astype(np.float64) - _per_axis(zero_point, axis, x.ndim).astype(np.float64)

    def run(a, a_s, a_z, b, b_s, b_z, y_s, y_z):
        # Integer products summed exactly in float64 (|sum| < 2**53, and BLAS does it),
        # then requantized in float32 with onnxruntime's multiplier a_s * b_s / y_s.
        if cache.get("b") is not b:  # the weights: a constant, converted once
            cache["b"], cache["b64"] = b, centred(b, b_z, -1)
            cache["m"] = (a_s.astype(np.float32) * b_s.astype(np.float32)) / y_s.astype(
                np.float32)
        acc = np.matmul(centred(a, a_z, -1), cache["b64"])
        y = np.rint(acc.astype(np.float32) * cache["m"]) + y_z.astype(np.float32)
        return (_saturate(y, y_z.dtype),)
    return run


def _qlinear_binary(fn):
    """com.microsoft QLinearAdd/QLinearMul: dequantize both, apply, quantize."""
    def make(attrs):
        def run(a, a_s, a_z, b, b_s, b_z, y_s, y_z):
            y = fn(dequantize(a, a_s, a_z), dequantize(b, b_s, b_z))
            return (quantize(y, y_s, y_z),)
        return run
    return make


def _qlinear_unary_table(fn):
    """com.microsoft QLinearSigmoid and friends: a 256-entry lookup, as onnxruntime does."""
    def make(attrs):
        tables: dict = {}

        def run(x, x_s, x_z, y_s, y_z):
            key = (x.dtype, float(x_s), int(x_z) if x_z is not None else 0, float(y_s),
                   int(y_z) if y_z is not None else 0)
            table = tables.get(key)
            if table is None:
                info = np.iinfo(x.dtype)
                values = np.arange(info.min, info.max + 1).astype(x.dtype)
                table = quantize(fn(dequantize(values, x_s, x_z)), y_s, y_z)
                tables[key] = table
            index = x.astype(np.int32) - np.iinfo(x.dtype).min
            return (table[index],)
        return run
    return make


def _qlinear_concat(attrs):
    axis = attrs["axis"]

    def run(y_s, y_z, *rest):
        parts = [dequantize(rest[i], rest[i + 1], rest[i + 2]) for i in range(0, len(rest), 3)]
        return (quantize(np.concatenate(parts, axis=axis), y_s, y_z),)
    return run


def _qlinear_softmax(attrs):
    softmax = _softmax(attrs)

    def run(x, x_s, x_z, y_s, y_z):
        return (quantize(softmax(dequantize(x, x_s, x_z))[0], y_s, y_z),)
    return run


# op_type (with domain) -> (kernel factory, attributes it reads)
KERNELS: dict[tuple[str, str], tuple[Callable[[dict], Callable], frozenset]] = {
    ("", "Add"): (_binary(np.add), frozenset()),
    ("", "Sub"): (_binary(np.subtract), frozenset()),
    ("", "Mul"): (_binary(np.multiply), frozenset()),
    ("", "Div"): (_binary(np.divide), frozenset()),
    ("", "Greater"): (_binary(np.greater), frozenset()),
    ("", "MatMul"): (_binary(np.matmul), frozenset()),
    ("", "Sigmoid"): (_unary(_sigmoid), frozenset()),
    ("", "Log"): (_unary(np.log), frozenset()),
    ("", "Sqrt"): (_unary(np.sqrt), frozenset()),
    ("", "Identity"): (_unary(lambda x: x), frozenset()),
    ("", "ReduceMean"): (_reduce(_reduce_mean), frozenset({"keepdims", "axes",
                                                            "noop_with_empty_axes"})),
    ("", "ReduceSum"): (_reduce(np.sum), frozenset({"keepdims", "axes",
                                                     "noop_with_empty_axes"})),
    ("", "ReduceMin"): (_reduce(np.min), frozenset({"keepdims", "axes",
                                                     "noop_with_empty_axes"})),
    ("", "ReduceMax"): (_reduce(np.max), frozenset({"keepdims", "axes",
                                                     "noop_with_empty_axes"})),
    ("", "ArgMin"): (_argmin, frozenset({"axis", "keepdims", "select_last_index"})),
    ("", "Softmax"): (_softmax, frozenset({"axis"})),
    ("", "Transpose"): (_transpose, frozenset({"perm"})),
    ("", "Reshape"): (_reshape, frozenset({"allowzero"})),
    ("", "Unsqueeze"): (_unsqueeze, frozenset({"axes"})),
    ("", "Concat"): (_concat, frozenset({"axis"})),
    ("", "Slice"): (_slice, frozenset()),
    ("", "Pad"): (_pad, frozenset({"mode"})),
    ("", "Cast"): (_cast, frozenset({"to", "saturate"})),
    ("", "Conv"): (_conv, frozenset({"kernel_shape", "dilations", "pads", "strides", "group",
                                     "auto_pad"})),
    ("", "QuantizeLinear"): (_quantize_linear, frozenset({"axis", "saturate", "block_size",
                                                          "output_dtype"})),
    ("", "DequantizeLinear"): (_dequantize_linear, frozenset({"axis", "block_size"})),
    ("", "QLinearMatMul"): (_qlinear_matmul, frozenset()),
    ("com.microsoft", "QLinearAdd"): (_qlinear_binary(np.add), frozenset()),
    ("com.microsoft", "QLinearMul"): (_qlinear_binary(np.multiply), frozenset()),
    ("com.microsoft", "QLinearSigmoid"): (_qlinear_unary_table(_sigmoid), frozenset()),
    ("com.microsoft", "QLinearConcat"): (_qlinear_concat, frozenset({"axis"})),
    ("com.microsoft", "QLinearSoftmax"): (_qlinear_softmax, frozenset({"axis", "opset"})),
}


def _op_name(node: Node) -> str:
    return node.op_type if not node.domain or node.domain == "ai.onnx" else \
        f"{node.domain}.{node.op_type}"


def _topological(nodes: list[Node], available: set[str]) -> list[Node]:
    """Nodes in an order where every input is made before it is read (Kahn's algorithm)."""
    ready, order, pending = set(available), [], list(nodes)
    while pending:
        rest = [n for n in pending if not all(not i or i in ready for i in n.inputs)]
        runnable = [n for n in pending if all(not i or i in ready for i in n.inputs)]
        if not runnable:
            missing = sorted({i for n in rest for i in n.inputs if i and i not in ready})
            raise UnsupportedModel(f"the graph reads tensors no node makes (or has a cycle): "
                                   f"{missing[:5]}")
        for n in runnable:
            order.append(n)
            ready.update(n.outputs)
        pending = rest
    return order


class NumpySession:
    """A model file run with numpy (see the module docstring).

    Parameters
    ----------
    model : bytes or str
        The serialized model, or a path.

    Raises
    ------
    UnsupportedModel
        If the file is not a model this runtime can run; the message names the operator,
        attribute or part that is not supported.
    """

    runtime = "numpy"

    def __init__(self, model: bytes | str):
        if isinstance(model, str):
            with open(model, "rb") as f:
                model = f.read()
        try:
            parsed = read_model(bytes(model))
        except ProtoError as e:
            raise UnsupportedModel(str(e)) from None
        graph = parsed.graph
        self._meta = ModelMeta(dict(parsed.metadata))
        values: dict[str, np.ndarray] = dict(graph.initializers)
        self._inputs = [Arg(v.name, _type_name(v.elem_type), list(v.shape or []))
                        for v in graph.inputs if v.name not in values]
        self._outputs = [Arg(v.name, _type_name(v.elem_type), list(v.shape or []))
                         for v in graph.outputs]
        unsupported = sorted({_op_name(n) for n in graph.nodes
                              if (DOMAINS.get(n.domain), n.op_type) not in KERNELS
                              or _op_name(n) not in SUPPORTED_OPS})
        if unsupported:
            raise UnsupportedModel(
                f"operator(s) {', '.join(unsupported)} not supported by the numpy runtime "
                f"(it runs {', '.join(sorted(SUPPORTED_OPS))}); run this model with "
                "onnxruntime or re-export it with `sigmoid-train fit`")
        order = _topological(graph.nodes, set(values) | {a.name for a in self._inputs})
        steps = []
        with np.errstate(all="ignore"):
            for node in order:
                factory, allowed = KERNELS[(DOMAINS[node.domain], node.op_type)]
                extra = sorted(set(node.attributes) - allowed)
                if extra:
                    raise UnsupportedModel(f"{node.op_type} node {node.name!r}: attribute(s) "
                                           f"{extra} not supported by the numpy runtime")
                try:
                    kernel = factory(node.attributes)
                except UnsupportedModel as e:
                    raise UnsupportedModel(f"{node.op_type} node {node.name!r}: {e}") from None
                if all(not i or i in values for i in node.inputs):
                    # Constant: compute once now (dequantized weights, shape arithmetic).
                    outs = kernel(*[values.get(i) if i else None for i in node.inputs])
                    values.update(zip(node.outputs, outs, strict=False))
                    continue
                steps.append((kernel, tuple(node.inputs), tuple(node.outputs)))
        self._constants = values
        self._steps = steps
        known = set(values) | {a.name for a in self._inputs} | {
            o for _, _, outs in steps for o in outs}
        missing = [o.name for o in self._outputs if o.name not in known]
        if missing:
            raise UnsupportedModel(f"graph outputs {missing} are made by no node")

    def get_inputs(self) -> list[Arg]:
        return list(self._inputs)

    def get_outputs(self) -> list[Arg]:
        return list(self._outputs)

    def get_modelmeta(self) -> ModelMeta:
        return self._meta

    def run(self, output_names, input_feed: dict) -> list[np.ndarray]:
        """Outputs ``output_names`` (all when None) for ``input_feed`` {name: array}."""
        env = dict(self._constants)
        for arg in self._inputs:
            if arg.name not in input_feed:
                raise ValueError(f"missing input {arg.name!r}")
            x = np.asarray(input_feed[arg.name])
            if arg.type == "tensor(float)" and x.dtype != np.float32:
                raise ValueError(f"input {arg.name!r} must be float32, got {x.dtype}")
            env[arg.name] = x
        with np.errstate(all="ignore"):
            for kernel, inputs, outputs in self._steps:
                outs = kernel(*[env[i] if i else None for i in inputs])
                for name, out in zip(outputs, outs, strict=False):
                    env[name] = out
        names = [o.name for o in self._outputs] if output_names is None else output_names
        return [np.asarray(env[n]) for n in names]


def _type_name(code: int) -> str:
    return f"tensor({TYPE_NAMES.get(code, 'unknown')})"
