"""Weight-only int8 MatMuls computed the way onnxruntime computes them (``MatMulNBits``).

A weight-only int8 model stores a network weight as int8 codes behind a
``DequantizeLinear`` that feeds a ``MatMul``'s B. onnxruntime (the edge's default runtime;
1.32.0 does, 1.23.2 does not) fuses that pair into its com.microsoft ``MatMulNBits`` (bits
8, block size 32, ``accuracy_level`` 4 by default), whose CPU kernel ("CompInt8", MLAS
``QuantizeARow_CompInt8``) quantizes the *activations* too: per row, in blocks of 32 along
K (the last one shorter), ``scale = amax / 127``, codes ``round_half_even(a * (127 / amax))``
(0 for an all-zero block), then integer dot products per block combined in float as
``sum_blocks a_scale * b_scale * dot``. The graph says float activations, so a runtime that
follows it differs from onnxruntime by up to a few 1e-2 in probability (measured 0.017),
enough to flip a label at a near-tie; this module makes the numpy runtime compute what
onnxruntime computes, to float rounding.

Where onnxruntime does this (measured 2026-11-29 on the models of ``tests/test_cli_fit.py``):
x86-64 (1.32.0) and a Cortex-A76 (Raspberry Pi 5, which has the dot-product instructions;
1.32.0 under qemu) round the activations, within 2.3e-5 of each other and 1.4e-5 of this
module. A Cortex-A72 (Raspberry Pi 4; qemu) computes the float product: 1.32.0 fuses to
``MatMulNBits`` but runs it in float (bit-identical to x86's accuracy level 0, 0.017 from
the others); 1.23.2 fuses these weights nowhere (x86-64 either). The numpy runtime follows
the trainer's machine with a current onnxruntime.

The fused pattern is the one onnxruntime's ``DQMatMulNodeGroupSelector`` accepts (MatMul
only: the numpy runtime runs no Gemm): a ``DequantizeLinear`` of a constant 2-D int8/uint8
initializer with a constant float scale (and zero point) that is either per tensor (rank 0)
or per column (rank 1 of length N, axis 1), no ``block_size``, read by a MatMul as input B,
where the MatMul's A is not a ``DequantizeLinear`` output too (that is a QDQ MatMul, which
onnxruntime fuses otherwise). onnxruntime first gives every consumer of a shared
``DequantizeLinear`` its own copy; here each such MatMul is fused and the node stays for
any other reader. (onnxruntime 1.32.0 fails to load a model with a shared one or one that
is also a graph output; the trainer writes neither.)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge.runtime.numpy_kernels import FUSED
from edge.runtime.onnx_proto import Node

BLOCK = 32  # onnxruntime's block size for per-tensor / per-channel weights
FUSED_OP = "MatMulNBits"
_STANDARD = ("", "ai.onnx")


def _weight_dq(dq: Node, values: dict, graph_inputs: set[str]) -> bool:
    """Whether ``dq`` is a DequantizeLinear onnxruntime turns into MatMulNBits weights."""
    if dq.op_type != "DequantizeLinear" or dq.domain not in _STANDARD or len(dq.inputs) < 2:
        return False
    names = [i for i in dq.inputs[:3] if i]
    if any(i not in values or i in graph_inputs for i in names):  # constant initializers
        return False
    w, scale = values[dq.inputs[0]], values[dq.inputs[1]]
    zp = values[dq.inputs[2]] if len(dq.inputs) > 2 and dq.inputs[2] else None
    if w.ndim != 2 or w.dtype not in (np.int8, np.uint8) or scale.dtype not in (
            np.float32, np.float16) or dq.attributes.get("block_size", 0):
        return False
    if scale.ndim == 0:
        return zp is None or zp.ndim == 0
    return (scale.ndim == 1 and scale.shape[0] == w.shape[1]
            and dq.attributes.get("axis", 1) in (1, -1)
            and (zp is None or zp.shape == scale.shape))


def fuse_weight_only(nodes: list[Node], values: dict, graph_inputs: set[str],
                     outputs: set[str]) -> list[Node]:
    """Replace each ``DequantizeLinear -> MatMul`` pair onnxruntime fuses (see the module
    docstring) by one ``MatMulNBits`` node of domain
    :data:`~edge.runtime.numpy_kernels.FUSED` that reads A only. A DequantizeLinear read
    by several MatMuls is fused into each (onnxruntime first gives every consumer its own
    copy); it stays for its other readers, if any. Other nodes are returned unchanged."""
    made_by = {o: n for n in nodes for o in n.outputs}
    readers: dict[str, int] = {}
    for n in nodes:
        for i in n.inputs:
            if i:
                readers[i] = readers.get(i, 0) + 1
    fused: dict[str, int] = {}  # DequantizeLinear output -> MatMuls fused with it
    replace: dict[int, Node] = {}
    for mm in nodes:
        if mm.op_type != "MatMul" or mm.domain not in _STANDARD or len(mm.inputs) != 2:
            continue
        dq, source = made_by.get(mm.inputs[1]), made_by.get(mm.inputs[0])
        if (dq is None or mm.inputs[0] == mm.inputs[1]
                or not _weight_dq(dq, values, graph_inputs)
                or (source is not None and source.op_type == "DequantizeLinear")):
            continue
        fused[mm.inputs[1]] = fused.get(mm.inputs[1], 0) + 1
        zp = values[dq.inputs[2]] if len(dq.inputs) > 2 and dq.inputs[2] else None
        replace[id(mm)] = Node(FUSED_OP, [mm.inputs[0]], list(mm.outputs), name=mm.name,
                               domain=FUSED, attributes={"weight": values[dq.inputs[0]],
                                                         "scale": values[dq.inputs[1]],
                                                         "zero_point": zp})
    drop = {id(made_by[t]) for t, k in fused.items() if k == readers[t] and t not in outputs}
    return [replace.get(id(n), n) for n in nodes if id(n) not in drop]


def matmul_nbits(w: np.ndarray, scale: np.ndarray, zp: np.ndarray | None) -> Callable:
    """The kernel of a fused ``MatMulNBits`` step: ``a [..., K] -> [..., N]`` float32.

    Each row of ``a`` is quantized on its own, to onnxruntime's codes; then the codes times
    their block's scale ("fake-quantized" activations) multiply the dequantized weights in
    one float32 matmul. onnxruntime sums integer dot products per block and scales those:
    the same numbers, rounded in another order (measured within 3e-7 of the largest
    output, as close as onnxruntime's own result is to the exact sum). About half the
    numpy calls of the blockwise integer form, which matters at batch 1.
    """
    k, n = w.shape
    codes = w.astype(np.float32) - (0 if zp is None else zp.astype(np.float32))
    weights = codes * scale.astype(np.float32).reshape(-1)  # [K, N], per column or tensor
    starts = np.arange(0, k, BLOCK)  # blocks of 32 along K, the last one shorter
    block_of = np.arange(k) // BLOCK
    f127 = np.float32(127)
    # An all-zero block: onnxruntime's inverse scale is 0 and so are the codes; any finite
    # inverse gives the same zeros (and a scale that multiplies them).
    tiny = np.float32(1e-36)
    largest, maximum, absolute = np.maximum.reduceat, np.maximum, np.abs
    divide, multiply, rint, dot = np.divide, np.multiply, np.rint, np.dot
    whole = np.maximum.reduce

    def one_block_row(a):
        # Batch 1 (the daemon's usual call) with a single block: a 1-D array and numpy
        # float32 scalars for its maximum and scale, fewer and cheaper calls (measured 4.8
        # against 7.4 us for K = 8). The same float32 operations as the rows below.
        x = a.reshape(k)
        amax = max(whole(absolute(x), axis=None), tiny)
        q = multiply(x, f127 / amax)
        rint(q, out=q)
        q *= amax / f127
        return dot(q, weights).reshape(*a.shape[:-1], n)

    def run(a):
        if a.size == k and len(starts) == 1:
            return one_block_row(a)
        x = a if a.ndim == 2 else a.reshape(-1, k)
        amax = largest(absolute(x), starts, axis=1)  # [rows, blocks]
        amax = maximum(amax, tiny, out=amax).take(block_of, axis=1)  # each element's block's
        q = divide(f127, amax)
        multiply(x, q, out=q)
        rint(q, out=q)  # onnxruntime's int8 codes (round half to even), as float32
        q *= divide(amax, f127, out=amax)  # times the block's scale, amax / 127
        y = dot(q, weights)
        return y if a.ndim == 2 else y.reshape(*a.shape[:-1], n)
    return run
