"""The numpy runtime's operator kernels: one factory per ONNX operator the trainer emits.

Each factory takes the node's attributes (a dict) and its constant inputs (a tuple with
None where an input is computed at run time) and returns a function of all its input
arrays that returns the output array. Attribute checks and whatever the constants allow
(slice indices, shapes, axes, prepared scales) happen in the factory, once, at load: a
model of a few dozen small nodes spends more time per node on Python than on arithmetic.

Kernels of the operators in :data:`INPLACE` also accept ``out=``: the compiler
(:mod:`edge.runtime.numpy_compile`) passes their first input as ``out`` when that input is a
fresh intermediate array read by nobody else, which saves an allocation per node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge.runtime.onnx_proto import DTYPES

# The clip ufunc (one call; np.clip is a Python wrapper around it): numpy >= 2 moved it.
_CLIP = getattr(np, "_core", None)
_CLIP = (_CLIP.umath if _CLIP is not None and hasattr(_CLIP, "umath") else np.core.umath).clip


FUSED = "sigmoid-edge.fused"  # the domain of the steps the runtime makes of several nodes


class UnsupportedModel(ValueError):
    """The model uses an operator or attribute the numpy runtime does not run."""


def _const(consts, i):
    return consts[i] if len(consts) > i else None


def _ufunc(fn):
    # The ufunc itself is the kernel: no wrapper call per node, and it takes out=.
    return lambda attrs, consts=(): fn


def _unary(fn):
    return lambda attrs, consts=(): fn


def sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``1 / (1 + exp(-x))`` in four in-place ufunc calls.

    exp overflow for x < -88 gives inf and 1 / inf = 0: the right limit (the run silences
    the warning).
    """
    y = np.negative(x, out=out)
    np.exp(y, out=y)
    np.add(y, 1.0, out=y)
    return np.reciprocal(y, out=y)


def _identity(x):
    return x


def _axes(attrs, consts, i) -> tuple | None:
    """Axes from the constant input ``i`` (opset >= 13/18) or the attribute (older opsets)."""
    axes = _const(consts, i)
    if axes is None:
        axes = attrs.get("axes")
    if axes is None or len(axes) == 0:
        return None
    return tuple(int(a) for a in np.asarray(axes).reshape(-1))


def _reduce(ufunc, mean: bool = False):
    def make(attrs, consts=()):
        keep = bool(attrs.get("keepdims", 1))
        if attrs.get("noop_with_empty_axes", 0):
            raise UnsupportedModel("noop_with_empty_axes=1 is not supported")
        axes = _axes(attrs, consts, 1)
        reduce = ufunc.reduce
        if not mean:
            return lambda x, _axes=None: reduce(x, axis=axes, keepdims=keep)

        if axes is not None and len(axes) == 1:
            axis = axes[0]

            def run_one(x, _axes=None):
                # The sum in float32, then one division, as onnxruntime (and np.mean) do.
                total = reduce(x, axis=axis, keepdims=keep)
                if total.dtype.kind == "f":
                    return np.divide(total, total.dtype.type(x.shape[axis]), out=total)
                return total / np.float32(x.shape[axis])
            return run_one

        def run(x, _axes=None):
            total = reduce(x, axis=axes, keepdims=keep)
            count = x.size // max(total.size, 1)
            if total.dtype.kind == "f":
                return np.divide(total, total.dtype.type(count), out=total)
            return total / np.float32(count)
        return run
    return make


def _matmul(attrs, consts=()):
    dot, matmul = np.dot, np.matmul

    # np.dot for two matrices: the same product with less call overhead than np.matmul
    # (measured 0.8 against 1.3 us for [1, 105] x [105, 3]); np.matmul for stacks.
    return lambda a, b: dot(a, b) if a.ndim == 2 and b.ndim == 2 else matmul(a, b)


def _transpose(attrs, consts=()):
    perm = attrs.get("perm")
    if perm is None:
        return lambda x: x.transpose()
    perm = tuple(perm)
    return lambda x: x.transpose(perm)


def _reshape(attrs, consts=()):
    if attrs.get("allowzero", 0):
        raise UnsupportedModel("Reshape allowzero=1 is not supported")
    shape = _const(consts, 1)
    fixed = None if shape is None else tuple(int(d) for d in shape.tolist())
    if fixed is not None and 0 not in fixed:
        return lambda x, _shape=None: x.reshape(fixed)

    def run(x, shape):
        dims = fixed if fixed is not None else [int(d) for d in shape.tolist()]
        if 0 in dims:  # 0 copies the input's dimension
            dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        return x.reshape(dims)
    return run


def _by_ndim(make_index):
    """A kernel ``x -> x[index]`` whose index depends on ``x.ndim`` only: built once."""
    index_of: dict[int, tuple] = {}

    def run(x, *_):
        index = index_of.get(x.ndim)
        if index is None:
            index = index_of[x.ndim] = make_index(x.ndim)
        return x[index]
    return run


def _unsqueeze(attrs, consts=()):
    axes = _axes(attrs, consts, 1)
    if axes is None:
        raise UnsupportedModel("Unsqueeze needs constant axes")

    def index(ndim):
        out_ndim = ndim + len(axes)
        new = {a % out_ndim for a in axes}
        return tuple(None if i in new else slice(None) for i in range(out_ndim))
    return _by_ndim(index)


def _concat(attrs, consts=()):
    axis = attrs["axis"]
    concatenate = np.concatenate
    return lambda *xs: concatenate(xs, axis=axis)


def _gather(attrs, consts=()):
    indices = _const(consts, 1)
    if indices is None:
        raise UnsupportedModel("Gather needs constant indices")
    axis = attrs.get("axis", 0)
    if indices.ndim == 1 and axis >= 0:  # plain indexing: cheaper than np.take
        index = (slice(None),) * axis + (indices,)
        return lambda x, _i=None: x[index]
    return lambda x, _i=None: np.take(x, indices, axis=axis)


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

    def index(ndim):
        full = [slice(None)] * ndim
        for a, s, e, st in cuts:
            full[a] = slice(s, e, st)
        return tuple(full)
    return _by_ndim(index)


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
    inner = tuple(slice(b, None if a == 0 else -a) for b, a in width)
    # Edge mode, axis by axis: the padding copies the slice next to it (corners included,
    # since later axes copy whole slices). np.pad does the same several times slower.
    edges = []
    for axis, (before, after) in enumerate(width):
        lead = (slice(None),) * axis
        if before:
            edges.append((lead + (slice(0, before),), lead + (slice(before, before + 1),)))
        if after:
            edges.append((lead + (slice(-after, None),), lead + (slice(-after - 1, -after),)))

    padded = [(axis, b, a) for axis, (b, a) in enumerate(width) if b or a]
    if mode == "edge" and len(padded) == 1:
        # One padded axis (the first difference's leading step): one concatenate.
        axis, before, after = padded[0]
        lead = (slice(None),) * axis
        first, last = lead + (slice(0, 1),), lead + (slice(-1, None),)
        concatenate = np.concatenate
        return lambda x, *_: concatenate(
            (x[first],) * before + (x,) + (x[last],) * after, axis=axis)

    def run(x, *_):
        shape = tuple(d + b + a for d, (b, a) in zip(x.shape, width, strict=True))
        if mode == "constant":
            out = np.full(shape, fill, x.dtype)
            out[inner] = x
            return out
        out = np.empty(shape, x.dtype)
        out[inner] = x
        for target, source in edges:
            out[target] = out[source]
        return out
    return run


def _cast(attrs, consts=()):
    code = attrs["to"]
    if code not in DTYPES:
        raise UnsupportedModel(f"Cast to data type {code} is not supported")
    dtype = np.dtype(DTYPES[code])
    return lambda x: x.astype(dtype)


def _softmax(attrs, consts=()):
    axis = attrs.get("axis", -1)
    maximum, add = np.maximum.reduce, np.add.reduce

    def run(x, out=None):
        e = np.subtract(x, maximum(x, axis=axis, keepdims=True), out=out)
        np.exp(e, out=e)
        return np.divide(e, add(e, axis=axis, keepdims=True), out=e)
    return run


def _argmin(attrs, consts=()):
    axis, keep = attrs.get("axis", 0), bool(attrs.get("keepdims", 1))
    if attrs.get("select_last_index", 0):
        raise UnsupportedModel("ArgMin select_last_index=1 is not supported")
    return lambda x: np.argmin(x, axis=axis, keepdims=keep).astype(np.int64)


@dataclass(frozen=True)
class ConvSpec:
    """A checked 1-D Conv node: kernels ``[K, C, k]``, dilation, stride, pads."""

    kernels: np.ndarray
    dilation: int
    stride: int
    pads: tuple[int, int]

    @property
    def span(self) -> int:
        return self.dilation * (self.kernels.shape[2] - 1)

    def out_len(self, t: int) -> int:
        """Output positions for an input of ``t`` samples (ONNX Conv, no auto_pad)."""
        return (t + self.pads[0] + self.pads[1] - self.span - 1) // self.stride + 1


def conv_spec(attrs, consts) -> ConvSpec:
    """The kernels, dilation, stride and pads of a 1-D Conv node, checked.

    Raises
    ------
    UnsupportedModel
        If the node is not a 1-D, ungrouped Conv with constant kernels and bias.
    """
    if attrs.get("group", 1) != 1 or attrs.get("auto_pad", "NOTSET") != "NOTSET":
        raise UnsupportedModel("Conv with group != 1 or auto_pad is not supported")
    strides = [int(s) for s in attrs.get("strides", [1])]
    dilation = attrs.get("dilations", [1])
    pads = [int(p) for p in attrs.get("pads", [0, 0])]
    if len(dilation) != 1 or len(strides) != 1 or len(pads) != 2 or min(pads) < 0 \
            or strides[0] < 1:
        raise UnsupportedModel("only 1-D Conv with positive strides and no negative pads "
                               "is supported")
    w = _const(consts, 1)
    if w is None or w.ndim != 3:
        raise UnsupportedModel("Conv needs constant 1-D kernels")
    if len(consts) > 2 and consts[2] is None:
        raise UnsupportedModel("Conv needs a constant bias")
    return ConvSpec(w, int(dilation[0]), strides[0], (pads[0], pads[1]))


def conv_taps(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``[B, C*k, T']`` with ``taps[b, c*k + j, t] = padded x[b, c, t*stride + j*d]``."""
    n, c, t = x.shape
    before, after = spec.pads
    if before or after:
        xp = np.zeros((n, c, t + before + after), x.dtype)
        xp[:, :, before:before + t] = x
    else:
        xp = x
    k, out_t = spec.kernels.shape[2], spec.out_len(t)
    st = xp.strides
    view = np.lib.stride_tricks.as_strided(
        xp, (n, c, k, out_t), (st[0], st[1], st[2] * spec.dilation, st[2] * spec.stride),
        writeable=False)
    return view.reshape(n, c * k, out_t)


def _conv(attrs, consts=()):
    spec = conv_spec(attrs, consts)
    w = spec.kernels
    w2 = np.ascontiguousarray(w.reshape(w.shape[0], -1))
    bias = None if _const(consts, 2) is None else consts[2].reshape(1, -1, 1)

    def run(x, *_):
        out = np.matmul(w2, conv_taps(x, spec))
        if bias is not None:
            out += bias
        return out
    return run


# int8 ---------------------------------------------------------------------------------

def _per_axis(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A per-axis scale/zero point shaped to broadcast along ``axis`` of an ndim tensor."""
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    shape = [1] * ndim
    shape[axis] = v.size
    return v.reshape(shape)


BOUNDS = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def _saturate(y: np.ndarray, dtype) -> np.ndarray:
    lo, hi = BOUNDS[np.dtype(dtype)]
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


class Scale:
    """One per-tensor scale and zero point, prepared once for fast (de)quantization.

    Dequantization is a lookup in a 256-entry table indexed by the code's bit pattern;
    quantization divides, rounds half to even and saturates like :func:`quantize`.
    """

    def __init__(self, scale: np.ndarray, zero_point: np.ndarray | None):
        zp = np.zeros((), np.uint8) if zero_point is None else zero_point
        if scale.size != 1 or zp.size != 1 or zp.dtype not in BOUNDS:
            raise UnsupportedModel("expected a per-tensor int8/uint8 scale and zero point")
        self.dtype = zp.dtype
        self.s = np.float32(scale.reshape(()))
        self.z = np.float32(zp.reshape(()))
        self.lo, self.hi = (np.float32(b) for b in BOUNDS[self.dtype])
        # the saturation bounds of a code minus its zero point (for round_trip)
        self.lo_z, self.hi_z = self.lo - self.z, self.hi - self.z
        codes = np.arange(256, dtype=np.uint8).view(self.dtype)
        self.table = dequantize(codes, scale.reshape(()), zp.reshape(()))
        self.centred = codes.astype(np.float64) - float(self.z)  # code - zero point

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return self.requantize(np.divide(x, self.s))

    def requantize(self, steps: np.ndarray) -> np.ndarray:
        """Codes for values already divided by the scale: round, add zero point, saturate.

        ``steps`` is overwritten (callers pass a fresh array).
        """
        y = np.rint(steps, out=steps)
        y += self.z
        return _CLIP(y, self.lo, self.hi, out=y).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return self.table[q.view(np.uint8)]

    # "Steps": an int8 tensor held as float32 ``code - zero_point`` (integers, exact), which
    # the compiler passes between QOperator kernels instead of codes: no conversion to int8
    # and no table lookup, and ``steps * scale`` is the dequantized value (the table's).

    def to_steps(self, y: np.ndarray) -> np.ndarray:
        """Steps for values already divided by the scale (``y`` is overwritten)."""
        np.rint(y, out=y)
        return _CLIP(y, self.lo_z, self.hi_z, out=y)

    def value(self, q: np.ndarray, steps: bool) -> np.ndarray:
        """The float value of codes, or of steps."""
        return np.multiply(q, self.s) if steps else self.table[q.view(np.uint8)]

    def output(self, y: np.ndarray, steps: bool) -> np.ndarray:
        """Codes (or steps) of values already divided by the scale (``y`` is overwritten)."""
        return self.to_steps(y) if steps else self.requantize(y)

    def round_trip(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``dequantize(quantize(x))`` without the int8 array in between: the same numbers
        (every code minus the zero point is an integer float32 holds exactly)."""
        y = np.divide(x, self.s, out=out)
        np.rint(y, out=y)
        _CLIP(y, self.lo_z, self.hi_z, out=y)
        return np.multiply(y, self.s, out=y)

    def round_trip_kernel(self) -> Callable:
        """A kernel computing :meth:`round_trip` that looks small arrays up instead.

        ``quantize`` is a non-decreasing step function of x (IEEE division is monotonic),
        so the code of x is the number of its steps' first floats at or below x: one
        binary search (``searchsorted``) and one lookup of the dequantized value, two
        numpy calls against four, cheaper up to about :data:`TABLE_UP_TO` elements (the
        binary search grows with the size). The same float32 values, zero's sign aside
        (a small negative x gives 0.0 here, -0.0 by arithmetic), and NaN maps to the top
        code instead of NaN.
        """
        if not (np.isfinite(self.s) and self.s > 0):  # not a step function of x then
            return self.round_trip
        firsts = _step_starts(self.s, int(self.lo_z), int(self.hi_z))
        levels = np.arange(self.lo_z, self.hi_z + 1, dtype=np.float32) * self.s
        search, arithmetic, limit = firsts.searchsorted, self.round_trip, TABLE_UP_TO

        def run(x, out=None):
            if x.size <= limit:
                return levels[search(x, "right")]
            return arithmetic(x, out)
        return run


TABLE_UP_TO = 128  # elements up to which a round trip looks values up (measured, x86-64)


def _step_starts(scale: np.float32, lo: int, hi: int) -> np.ndarray:
    """For each code ``k`` in ``lo + 1 .. hi``, the smallest float32 x whose
    ``clip(rint(x / scale), lo, hi)`` is ``k``: found exactly by bisection over the float32
    values in order (their bit patterns mapped to ordered integers)."""
    def to_key(f):
        bits = f.view(np.int32).astype(np.int64)
        return np.where(bits >= 0, bits, -(bits & 0x7FFFFFFF))

    def from_key(k):
        bits = np.where(k >= 0, k, (-k) | 0x80000000).astype(np.uint32)
        return bits.view(np.float32)

    def code(x):
        with np.errstate(all="ignore"):
            return np.clip(np.rint(np.divide(x, scale)), lo, hi)

    want = np.arange(lo + 1, hi + 1, dtype=np.float32)
    big = np.finfo(np.float32).max
    # The step starts within a few floats of (k - 1/2) scale: bracket there (a few
    # bisections at load instead of 32), the whole float range where the guess is off.
    guess = to_key(((want.astype(np.float64) - 0.5) * float(scale)).astype(np.float32))
    low, high = guess - 16, guess + 16  # invariant: code(low) < k <= code(high)
    low = np.where(code(from_key(low)) < want, low, to_key(np.array([-big], np.float32)))
    high = np.where(code(from_key(high)) >= want, high, to_key(np.array([big], np.float32)))
    while np.any(high - low > 1):
        mid = (low + high) // 2
        above = code(from_key(mid)) >= want
        high = np.where(above, mid, high)
        low = np.where(above, low, mid)
    return from_key(high)


def scales(consts, *positions) -> list[Scale]:
    """Prepared scales from constant (scale, zero point) input pairs at ``positions``."""
    out = []
    for i in positions:
        scale, zero = _const(consts, i), _const(consts, i + 1)
        if scale is None or (len(consts) > i + 1 and consts[i + 1] is None):
            raise UnsupportedModel("scales and zero points must be constants")
        out.append(Scale(scale, zero))
    return out


def _steps_in(attrs, i: int) -> bool:
    """Whether input ``i`` arrives as steps (see :meth:`Scale.to_steps`): set by the compiler."""
    return i in attrs.get("steps_in", ())


def _quantize_linear(attrs, consts=()):
    axis = attrs.get("axis", 1)
    _no_block(attrs)
    scale = _const(consts, 1)
    if scale is not None and scale.size == 1 and _const(consts, 2) is not None:
        (q,) = scales(consts, 1)
        if attrs.get("steps_out"):
            return lambda x, *_: q.to_steps(np.divide(x, q.s))
        return lambda x, *_: q.quantize(x)
    return lambda x, s, z=None: quantize(x, s, z, axis)


def _dequantize_linear(attrs, consts=()):
    axis = attrs.get("axis", 1)
    _no_block(attrs)
    scale = _const(consts, 1)
    if (_const(consts, 0) is None and scale is not None and scale.size == 1
            and _const(consts, 2) is not None):
        (q,) = scales(consts, 1)
        steps = _steps_in(attrs, 0)
        return lambda x, *_: q.value(x, steps)
    return lambda x, s, z=None: dequantize(x, s, z, axis)


def _no_block(attrs):
    if attrs.get("block_size", 0):
        raise UnsupportedModel("blocked quantization (block_size) is not supported")
    if attrs.get("saturate", 1) != 1 or attrs.get("output_dtype", 0) not in (0, 2, 3):
        raise UnsupportedModel("only int8/uint8 quantization is supported")


def _qlinear_matmul(attrs, consts=()):
    a_q, y_q = scales(consts, 1, 6)
    b, b_s, b_z = (_const(consts, i) for i in (3, 4, 5))
    if b is None or b_s is None or b_z is None:
        raise UnsupportedModel("QLinearMatMul needs constant weights (input B)")
    # Integer products summed exactly in float64 (|sum| < 2**53, and BLAS does it), then
    # requantized in float32 with onnxruntime's multiplier a_scale * b_scale / y_scale.
    b64 = b.astype(np.float64) - _per_axis(b_z, -1, b.ndim).astype(np.float64)
    m = (a_q.s * b_s.astype(np.float32)) / y_q.s
    centred, steps_in, steps_out = a_q.centred, _steps_in(attrs, 0), attrs.get("steps_out")

    def run(a, *_):
        acc = np.matmul(a if steps_in else centred[a.view(np.uint8)], b64).astype(np.float32)
        return y_q.output(np.multiply(acc, m, out=acc), steps_out)
    return run


def _qlinear_binary(fn):
    """com.microsoft QLinearAdd/QLinearMul: dequantize both, apply, quantize."""
    def make(attrs, consts=()):
        a_q, b_q, y_q = scales(consts, 1, 4, 6)
        b_const = _const(consts, 3)
        b_float = None if b_const is None else b_q.dequantize(b_const)
        a_steps, b_steps, steps_out = (_steps_in(attrs, 0), _steps_in(attrs, 3),
                                       attrs.get("steps_out"))

        def run(a, _as, _az, b, *_):
            other = b_float if b_float is not None else b_q.value(b, b_steps)
            y = fn(a_q.value(a, a_steps), other)
            return y_q.output(np.divide(y, y_q.s, out=y), steps_out)
        return run
    return make


def _qlinear_unary_table(fn):
    """com.microsoft QLinearSigmoid: a 256-entry lookup table, as onnxruntime does."""
    def make(attrs, consts=()):
        x_q, y_q = scales(consts, 1, 3)
        with np.errstate(all="ignore"):
            table = y_q.quantize(fn(x_q.table))
        if attrs.get("steps_out"):  # the table holds the output's steps instead of codes
            table = table.astype(np.float32) - y_q.z
        if _steps_in(attrs, 0):  # steps + zero point are the codes: index by their bits
            z, dtype = x_q.z, x_q.dtype
            return lambda x, *_: table[np.add(x, z).astype(dtype).view(np.uint8)]
        return lambda x, *_: table[x.view(np.uint8)]
    return make


def _qlinear_concat(attrs, consts=()):
    axis = attrs["axis"]
    y_q, *x_q = scales(consts, 0, *range(3, len(consts), 3))

    # Each input's codes map to output codes through a 256-entry table (onnxruntime does
    # the same); an input already on the output's scale is copied as it is.
    with np.errstate(all="ignore"):
        maps = [None if (q.s, q.z, q.dtype) == (y_q.s, y_q.z, y_q.dtype)
                else y_q.quantize(q.table) for q in x_q]

    def run(_ys, _yz, *rest):
        parts = [rest[3 * k] if m is None else m[rest[3 * k].view(np.uint8)]
                 for k, m in enumerate(maps)]
        return np.concatenate(parts, axis=axis)
    return run


def _qlinear_softmax(attrs, consts=()):
    softmax = _softmax(attrs)
    x_q, y_q = scales(consts, 1, 3)
    steps_in, steps_out = _steps_in(attrs, 0), attrs.get("steps_out")

    def run(x, *_):
        y = softmax(x_q.value(x, steps_in))
        return y_q.output(np.divide(y, y_q.s, out=y), steps_out)
    return run


# Which inputs of a QOperator kernel may arrive as steps, and whether its output may leave
# as steps (the compiler's choice, passed as the attributes steps_in / steps_out).
STEPS_IN: dict[tuple[str, str], tuple[int, ...]] = {
    ("", "DequantizeLinear"): (0,),
    ("", "QLinearMatMul"): (0,),
    ("com.microsoft", "QLinearAdd"): (0, 3),
    ("com.microsoft", "QLinearMul"): (0, 3),
    ("com.microsoft", "QLinearSigmoid"): (0,),
    ("com.microsoft", "QLinearSoftmax"): (0,),
}
STEPS_OUT = frozenset({("", "QuantizeLinear"), ("", "QLinearMatMul"),
                       ("com.microsoft", "QLinearAdd"), ("com.microsoft", "QLinearMul"),
                       ("com.microsoft", "QLinearSigmoid"), ("com.microsoft", "QLinearSoftmax")})


_REDUCE_ATTRS = frozenset({"keepdims", "axes", "noop_with_empty_axes"})

# op_type (with domain) -> (kernel factory, attributes it reads)
KERNELS: dict[tuple[str, str], tuple[Callable[[dict], Callable], frozenset]] = {
    ("", "Add"): (_ufunc(np.add), frozenset()),
    ("", "Sub"): (_ufunc(np.subtract), frozenset()),
    ("", "Mul"): (_ufunc(np.multiply), frozenset()),
    ("", "Div"): (_ufunc(np.divide), frozenset()),
    ("", "Greater"): (_ufunc(np.greater), frozenset()),
    ("", "MatMul"): (_matmul, frozenset()),
    ("", "Sigmoid"): (_unary(sigmoid), frozenset()),
    ("", "Log"): (_ufunc(np.log), frozenset()),
    ("", "Sqrt"): (_ufunc(np.sqrt), frozenset()),
    ("", "Identity"): (_unary(_identity), frozenset()),
    ("", "ReduceMean"): (_reduce(np.add, mean=True), _REDUCE_ATTRS),
    ("", "ReduceSum"): (_reduce(np.add), _REDUCE_ATTRS),
    ("", "ReduceMin"): (_reduce(np.minimum), _REDUCE_ATTRS),
    ("", "ReduceMax"): (_reduce(np.maximum), _REDUCE_ATTRS),
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
    ("com.microsoft", "QLinearSigmoid"): (_qlinear_unary_table(sigmoid), frozenset()),
    ("com.microsoft", "QLinearConcat"): (_qlinear_concat, frozenset({"axis"})),
    ("com.microsoft", "QLinearSoftmax"): (_qlinear_softmax, frozenset({"axis", "opset"})),
}

# Operators whose kernel takes ``out=`` and returns an array of its first input's shape and
# dtype when the compiler has checked they match: elementwise ones.
INPLACE = frozenset({("", "Add"), ("", "Sub"), ("", "Mul"), ("", "Div"), ("", "Sigmoid"),
                     ("", "Log"), ("", "Sqrt"), ("", "Softmax")})
