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

from edge.contract import SUPPORTED_OPS, op_name
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
# Each factory takes the node's attributes (a dict) and its constant inputs (a tuple with
# None where an input is computed at run time) and returns a function of all its input
# arrays that returns a tuple of outputs. Attribute checks and whatever the constants allow
# (slice indices, shapes, axes) happen here, once, at load: a model of a few dozen small
# nodes spends more time per node on Python than on arithmetic.

def _binary(fn):
    return lambda attrs, consts=(): lambda a, b: (fn(a, b),)


def _unary(fn):
    return lambda attrs, consts=(): lambda x: (fn(x),)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp overflow for x < -88 gives inf and 1 / inf = 0: the right limit (run() silences it).
    return 1.0 / (1.0 + np.exp(-x))


def _const(consts, i):
    return consts[i] if len(consts) > i else None


def _axes(attrs, consts, i) -> tuple | None:
    """Axes from the constant input ``i`` (opset >= 13/18) or the attribute (older opsets)."""
    axes = _const(consts, i)
    if axes is None:
        axes = attrs.get("axes")
    if axes is None or len(axes) == 0:
        return None
    return tuple(int(a) for a in np.asarray(axes).reshape(-1))


def _reduce(fn):
    def make(attrs, consts=()):
        keep = bool(attrs.get("keepdims", 1))
        if attrs.get("noop_with_empty_axes", 0):
            raise UnsupportedModel("noop_with_empty_axes=1 is not supported")
        axes = _axes(attrs, consts, 1)

        def run(x, _axes=None):
            return (fn(x, axes, keep),)
        return run
    return make


def _reduce_mean(x, axis, keepdims):
    # The sum in float32, then one division, as onnxruntime (and np.mean) do.
    total = np.add.reduce(x, axis=axis, keepdims=keepdims)
    count = x.size // max(total.size, 1)
    return total / x.dtype.type(count) if x.dtype.kind == "f" else total / np.float32(count)


def _reduce_ufunc(ufunc):
    return lambda x, axis, keepdims: ufunc.reduce(x, axis=axis, keepdims=keepdims)


def _transpose(attrs, consts=()):
    perm = attrs.get("perm")
    return lambda x: (np.transpose(x, perm),)


def _reshape(attrs, consts=()):
    if attrs.get("allowzero", 0):
        raise UnsupportedModel("Reshape allowzero=1 is not supported")
    shape = _const(consts, 1)
    fixed = None if shape is None else [int(d) for d in shape.tolist()]

    def run(x, shape):
        dims = fixed if fixed is not None else [int(d) for d in shape.tolist()]
        if 0 in dims:  # 0 copies the input's dimension
            dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        return (x.reshape(dims),)
    return run


def _unsqueeze(attrs, consts=()):
    axes = _axes(attrs, consts, 1)
    if axes is None:
        raise UnsupportedModel("Unsqueeze needs constant axes")
    return lambda x, _axes=None: (np.expand_dims(x, axes),)


def _concat(attrs, consts=()):
    axis = attrs["axis"]
    return lambda *xs: (np.concatenate(xs, axis=axis),)


def _gather(attrs, consts=()):
    indices = _const(consts, 1)
    if indices is None:
        raise UnsupportedModel("Gather needs constant indices")
    axis = attrs.get("axis", 0)
    return lambda x, _i=None: (np.take(x, indices, axis=axis),)


def _slice(attrs, consts=()):
    starts, ends = _const(consts, 1), _const(consts, 2)
    if starts is None or ends is None or any(
            len(consts) > i and consts[i] is None for i in (3, 4)):
        raise UnsupportedModel("Slice needs constant starts, ends, axes and steps")
    axes = _const(consts, 3)
    steps = _const(consts, 4)
    axes = list(range(len(starts))) if axes is None else axes.tolist()
    steps = [1] * len(starts) if steps is None else steps.tolist()
    cuts = list(zip(axes, starts.tolist(), ends.tolist(), steps, strict=True))
    index_of: dict[int, tuple] = {}

    def run(x, *_):
        index = index_of.get(x.ndim)
        if index is None:
            full = [slice(None)] * x.ndim
            for a, s, e, st in cuts:
                full[a] = slice(s, e, st)
            index = index_of[x.ndim] = tuple(full)
        return (x[index],)
    return run


def _pad(attrs, consts=()):
    mode = attrs.get("mode", "constant")
    if mode not in ("constant", "edge"):
        raise UnsupportedModel(f"Pad mode={mode!r} is not supported")
    pads, value = _const(consts, 1), _const(consts, 2)
    if pads is None or len(consts) > 3 and consts[3] is not None or (
            len(consts) > 2 and consts[2] is None and mode == "constant"):
        raise UnsupportedModel("Pad needs constant pads and value, and no axes")
    p = pads.tolist()
    n = len(p) // 2
    width = list(zip(p[:n], p[n:], strict=True))
    if any(a < 0 or b < 0 for a, b in width):
        raise UnsupportedModel("Pad with negative pads is not supported")
    fill = 0 if value is None or value.size == 0 else value.item()

    def run(x, *_):
        if mode == "constant":
            return (np.pad(x, width, mode="constant", constant_values=fill),)
        # Edge: repeat the first/last slice along each padded axis (np.pad is slow here).
        for axis, (before, after) in enumerate(width):
            if before or after:
                first = np.take(x, [0] * before, axis=axis)
                last = np.take(x, [-1] * after, axis=axis)
                x = np.concatenate([first, x, last], axis=axis)
        return (x,)
    return run


def _cast(attrs, consts=()):
    dtype = _dtype(attrs["to"])
    return lambda x: (x.astype(dtype),)


def _dtype(code: int):
    from edge.runtime.onnx_proto import DTYPES

    if code not in DTYPES:
        raise UnsupportedModel(f"Cast to data type {code} is not supported")
    return DTYPES[code]


def _softmax(attrs, consts=()):
    axis = attrs.get("axis", -1)

    def run(x):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return (e / e.sum(axis=axis, keepdims=True),)
    return run


def _argmin(attrs, consts=()):
    axis, keep = attrs.get("axis", 0), bool(attrs.get("keepdims", 1))
    if attrs.get("select_last_index", 0):
        raise UnsupportedModel("ArgMin select_last_index=1 is not supported")
    return lambda x: (np.argmin(x, axis=axis, keepdims=keep).astype(np.int64),)


def _conv(attrs, consts=(), cache=None):
    """1-D convolution ``[B, C, T] * [K, C, k] -> [B, K, T']`` as one batched matmul.

    ``cache`` (one dict per session) shares the tap matrix of an input between the Conv
    nodes that read it with the same dilation: the conv family runs up to two nodes (padded
    and unpadded kernels) per dilation on one input, and the unpadded taps are a slice of
    the padded ones.
    """
    if attrs.get("group", 1) != 1 or attrs.get("auto_pad", "NOTSET") != "NOTSET":
        raise UnsupportedModel("Conv with group != 1 or auto_pad is not supported")
    strides = attrs.get("strides", [1])
    if list(strides) != [1] * len(strides):
        raise UnsupportedModel("Conv with strides != 1 is not supported")
    dilation = attrs.get("dilations", [1])
    pads = [int(p) for p in attrs.get("pads", [0, 0])]
    if len(dilation) != 1 or len(pads) != 2 or min(pads) < 0:
        raise UnsupportedModel("only 1-D Conv without negative pads is supported")
    w = _const(consts, 1)
    if w is None or w.ndim != 3:
        raise UnsupportedModel("Conv needs constant 1-D kernels")
    d, (k_out, c, k) = int(dilation[0]), w.shape
    if consts and len(consts) > 2 and consts[2] is None:
        raise UnsupportedModel("Conv needs a constant bias")
    w2 = np.ascontiguousarray(w.reshape(k_out, c * k))
    bias = None if _const(consts, 2) is None else consts[2].reshape(1, -1, 1)
    shared = {} if cache is None else cache
    span = d * (k - 1)

    def taps(x, before, after):
        """``[B, C*k, T']`` with ``taps[b, c*k + j, t] = padded x[b, c, t + j*d]``."""
        key = (d, k, before, after)
        hit = shared.get(key)
        if hit is not None and hit[0] is x:
            return hit[1]
        if before == after == 0:  # a slice of the symmetric padded taps, when present
            for (dd, kk, b, a), (xx, full) in list(shared.items()):
                if xx is x and dd == d and kk == k and b == a:
                    return full[:, :, b:full.shape[2] - a]
        n, _, t = x.shape
        if before or after:
            xp = np.zeros((n, c, t + before + after), x.dtype)
            xp[:, :, before:before + t] = x
        else:
            xp = x
        out_t = xp.shape[2] - span
        st = xp.strides
        view = np.lib.stride_tricks.as_strided(
            xp, (n, c, k, out_t), (st[0], st[1], st[2] * d, st[2]), writeable=False)
        result = view.reshape(n, c * k, out_t)  # copies once
        shared[key] = (x, result)
        return result

    def run(x, *_):
        out = np.matmul(w2, taps(x, pads[0], pads[1]))
        if bias is not None:
            out += bias
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


_BOUNDS = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def _saturate(y: np.ndarray, dtype) -> np.ndarray:
    lo, hi = _BOUNDS[np.dtype(dtype)]
    return np.clip(y, lo, hi).astype(dtype)


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


class _Scale:
    """One per-tensor scale and zero point, prepared once for fast (de)quantization.

    Dequantization is a lookup in a 256-entry table indexed by the code's bit pattern;
    quantization divides, rounds half to even and saturates like :func:`quantize`.
    """

    def __init__(self, scale: np.ndarray, zero_point: np.ndarray | None):
        zp = np.zeros((), np.uint8) if zero_point is None else zero_point
        if scale.size != 1 or zp.size != 1 or zp.dtype not in _BOUNDS:
            raise UnsupportedModel("expected a per-tensor int8/uint8 scale and zero point")
        self.dtype = zp.dtype
        self.s = np.float32(scale.reshape(()))
        self.z = np.float32(zp.reshape(()))
        self.lo, self.hi = (np.float32(b) for b in _BOUNDS[self.dtype])
        codes = np.arange(256, dtype=np.uint8).view(self.dtype)
        self.table = dequantize(codes, scale.reshape(()), zp.reshape(()))
        self.centred = codes.astype(np.float64) - float(self.z)  # code - zero point

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return self.requantize(x / self.s)

    def requantize(self, steps: np.ndarray) -> np.ndarray:
        """Codes for values already divided by the scale: round, add zero point, saturate."""
        y = np.rint(steps)
        y += self.z
        np.minimum(y, self.hi, out=y)
        np.maximum(y, self.lo, out=y)
        return y.astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return self.table[q.view(np.uint8)]


def _scales(consts, *positions) -> list[_Scale]:
    """Prepared scales from constant (scale, zero point) input pairs at ``positions``."""
    out = []
    for i in positions:
        scale, zero = _const(consts, i), _const(consts, i + 1)
        if scale is None or (len(consts) > i + 1 and consts[i + 1] is None):
            raise UnsupportedModel("scales and zero points must be constants")
        out.append(_Scale(scale, zero))
    return out


def _quantize_linear(attrs, consts=()):
    axis = attrs.get("axis", 1)
    _no_block(attrs)
    scale = _const(consts, 1)
    if scale is not None and scale.size == 1 and _const(consts, 2) is not None:
        (q,) = _scales(consts, 1)
        return lambda x, *_: (q.quantize(x),)
    return lambda x, s, z=None: (quantize(x, s, z, axis),)


def _dequantize_linear(attrs, consts=()):
    axis = attrs.get("axis", 1)
    _no_block(attrs)
    scale = _const(consts, 1)
    if (_const(consts, 0) is None and scale is not None and scale.size == 1
            and _const(consts, 2) is not None):
        (q,) = _scales(consts, 1)
        return lambda x, *_: (q.dequantize(x),)
    return lambda x, s, z=None: (dequantize(x, s, z, axis),)


def _no_block(attrs):
    if attrs.get("block_size", 0):
        raise UnsupportedModel("blocked quantization (block_size) is not supported")
    if attrs.get("saturate", 1) != 1 or attrs.get("output_dtype", 0) not in (0, 2, 3):
        raise UnsupportedModel("only int8/uint8 quantization is supported")


def _qlinear_matmul(attrs, consts=()):
    a_q, y_q = _scales(consts, 1, 6)
    b, b_s, b_z = (_const(consts, i) for i in (3, 4, 5))
    if b is None or b_s is None or b_z is None:
        raise UnsupportedModel("QLinearMatMul needs constant weights (input B)")
    # Integer products summed exactly in float64 (|sum| < 2**53, and BLAS does it), then
    # requantized in float32 with onnxruntime's multiplier a_scale * b_scale / y_scale.
    b64 = b.astype(np.float64) - _per_axis(b_z, -1, b.ndim).astype(np.float64)
    m = (a_q.s * b_s.astype(np.float32)) / y_q.s

    def run(a, *_):
        acc = np.matmul(a_q.centred[a.view(np.uint8)], b64).astype(np.float32)
        return (y_q.requantize(acc * m),)
    return run


def _qlinear_binary(fn):
    """com.microsoft QLinearAdd/QLinearMul: dequantize both, apply, quantize."""
    def make(attrs, consts=()):
        a_q, b_q, y_q = _scales(consts, 1, 4, 6)

        def run(a, _as, _az, b, *_):
            return (y_q.quantize(fn(a_q.dequantize(a), b_q.dequantize(b))),)
        return run
    return make


def _qlinear_unary_table(fn):
    """com.microsoft QLinearSigmoid: a 256-entry lookup table, as onnxruntime does."""
    def make(attrs, consts=()):
        x_q, y_q = _scales(consts, 1, 3)
        with np.errstate(all="ignore"):
            table = y_q.quantize(fn(x_q.table))
        return lambda x, *_: (table[x.view(np.uint8)],)
    return make


def _qlinear_concat(attrs, consts=()):
    axis = attrs["axis"]
    y_q, *x_q = _scales(consts, 0, *range(3, len(consts), 3))

    # Each input's codes map to output codes through a 256-entry table (onnxruntime does
    # the same); an input already on the output's scale is copied as it is.
    with np.errstate(all="ignore"):
        maps = [None if (q.s, q.z, q.dtype) == (y_q.s, y_q.z, y_q.dtype)
                else y_q.quantize(q.table) for q in x_q]

    def run(_ys, _yz, *rest):
        parts = [rest[3 * k] if m is None else m[rest[3 * k].view(np.uint8)]
                 for k, m in enumerate(maps)]
        return (np.concatenate(parts, axis=axis),)
    return run


def _qlinear_softmax(attrs, consts=()):
    softmax = _softmax(attrs)
    x_q, y_q = _scales(consts, 1, 3)
    return lambda x, *_: (y_q.quantize(softmax(x_q.dequantize(x))[0]),)


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
    ("", "ReduceSum"): (_reduce(_reduce_ufunc(np.add)), frozenset({"keepdims", "axes",
                                                     "noop_with_empty_axes"})),
    ("", "ReduceMin"): (_reduce(_reduce_ufunc(np.minimum)), frozenset({"keepdims", "axes",
                                                     "noop_with_empty_axes"})),
    ("", "ReduceMax"): (_reduce(_reduce_ufunc(np.maximum)), frozenset({"keepdims", "axes",
                                                     "noop_with_empty_axes"})),
    ("", "ArgMin"): (_argmin, frozenset({"axis", "keepdims", "select_last_index"})),
    ("", "Softmax"): (_softmax, frozenset({"axis"})),
    ("", "Transpose"): (_transpose, frozenset({"perm"})),
    ("", "Reshape"): (_reshape, frozenset({"allowzero"})),
    ("", "Unsqueeze"): (_unsqueeze, frozenset({"axes"})),
    ("", "Concat"): (_concat, frozenset({"axis"})),
    ("", "Gather"): (_gather, frozenset({"axis"})),
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
    return op_name(DOMAINS.get(node.domain, node.domain), node.op_type)


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
                              or (DOMAINS[n.domain], n.op_type) not in SUPPORTED_OPS})
        if unsupported:
            runs = sorted(op_name(*op) for op in KERNELS)
            raise UnsupportedModel(
                f"operator(s) {', '.join(unsupported)} not supported by the numpy runtime "
                f"(it runs {', '.join(runs)}); run this model with onnxruntime or re-export "
                "it with `sigmoid-train fit`")
        order = _topological(graph.nodes, set(values) | {a.name for a in self._inputs})
        # Tensors computed at run time live in a list, by index; constants are bound into
        # each step's argument template at load.
        slot: dict[str, int] = {a.name: i for i, a in enumerate(self._inputs)}
        self._conv_cache: dict = {}
        steps = []
        with np.errstate(all="ignore"):
            for node in order:
                factory, allowed = KERNELS[(DOMAINS[node.domain], node.op_type)]
                extra = sorted(set(node.attributes) - allowed)
                if extra:
                    raise UnsupportedModel(f"{node.op_type} node {node.name!r}: attribute(s) "
                                           f"{extra} not supported by the numpy runtime")
                consts = tuple(values.get(i) if i else None for i in node.inputs)
                # Conv nodes share tap matrices through one cache per session.
                extra_args = {"cache": self._conv_cache} if node.op_type == "Conv" else {}
                try:
                    kernel = factory(node.attributes, consts, **extra_args)
                except UnsupportedModel as e:
                    raise UnsupportedModel(f"{node.op_type} node {node.name!r}: {e}") from None
                if all(not i or i in values for i in node.inputs):
                    # Constant: compute once now (dequantized weights, shape arithmetic).
                    values.update(zip(node.outputs, kernel(*consts), strict=False))
                    continue
                dynamic = tuple((k, slot[i]) for k, i in enumerate(node.inputs)
                                if i and i not in values)
                outputs = []
                for o in node.outputs:
                    slot[o] = len(slot)
                    outputs.append(slot[o])
                steps.append((kernel, list(consts), dynamic, tuple(outputs)))
        self._steps = steps
        self._n_slots = len(slot)
        self._fetch = {}
        for o in self._outputs:
            if o.name in slot:
                self._fetch[o.name] = (True, slot[o.name])
            elif o.name in values:
                self._fetch[o.name] = (False, values[o.name])
            else:
                raise UnsupportedModel(f"graph output {o.name!r} is made by no node")

    def get_inputs(self) -> list[Arg]:
        return list(self._inputs)

    def get_outputs(self) -> list[Arg]:
        return list(self._outputs)

    def get_modelmeta(self) -> ModelMeta:
        return self._meta

    def run(self, output_names, input_feed: dict) -> list[np.ndarray]:
        """Outputs ``output_names`` (all when None) for ``input_feed`` {name: array}."""
        slots: list = [None] * self._n_slots
        for i, arg in enumerate(self._inputs):
            try:
                x = input_feed[arg.name]
            except KeyError:
                raise ValueError(f"missing input {arg.name!r}") from None
            if arg.type == "tensor(float)" and x.dtype != np.float32:
                raise ValueError(f"input {arg.name!r} must be float32, got {x.dtype}")
            slots[i] = x
        with np.errstate(all="ignore"):
            for kernel, args, dynamic, outputs in self._steps:
                for k, i in dynamic:
                    args[k] = slots[i]
                result = kernel(*args)
                for o, r in zip(outputs, result, strict=False):
                    slots[o] = r
                for k, _ in dynamic:  # drop the references: the arrays may be large
                    args[k] = None
        self._conv_cache.clear()
        names = [o.name for o in self._outputs] if output_names is None else output_names
        out = []
        for name in names:
            computed, where = self._fetch[name]
            out.append(slots[where] if computed else where)
        return out


def _type_name(code: int) -> str:
    return f"tensor({TYPE_NAMES.get(code, 'unknown')})"
