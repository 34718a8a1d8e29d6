"""Compile a model graph for the numpy runtime: fused steps, then one generated function.

A model of a few dozen nodes on a batch of one window spends its time in Python and in
numpy's per-call overhead, not in arithmetic. So at load, once:

1. **Fusion** of chains the trainer's graphs are made of, each into one step that computes
   the same numbers with fewer numpy calls and allocations:

   - ``QuantizeLinear -> DequantizeLinear`` with the same per-tensor scale and zero point
     (every activation of a QDQ model): divide, round, clip and multiply in float, without
     the int8 array in between, or for small arrays a binary search in the quantization
     steps and a lookup (:meth:`~edge.runtime.numpy_kernels.Scale.round_trip_kernel`);
   - ``Greater -> Cast(float) [-> Mul(0/1 mask)] -> ReduceMean/ReduceSum`` (the PPV
     features of the conv family): the mask applied to the booleans, then one cast and
     one float32 sum (exact: the sums are integers below 2**24);
   - ``Conv`` nodes reading one input: one zero-padded copy of it; those with the same
     dilation and kernel size (the conv family's padded and unpadded kernels per
     dilation) one gather of the taps and one matmul of the stacked kernels; each node's
     output is a view of it;
   - ``Identity``: no step, the name is an alias.

2. **In-place steps**: an elementwise step whose first input is a fresh array of the same
   shape and dtype that nothing else reads writes its result into it (``out=``); a load-time
   probe at batch 1 and 2 checks the shapes.

3. **Code generation**: the steps become one Python function, one line per step with its
   kernel and constants bound as globals (``t3 = k3(t1, c2)``), so a run has no loop, no
   dictionary of tensors and no per-node bookkeeping.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edge.runtime import numpy_kernels as nk
from edge.runtime.numpy_matmul_nbits import FUSED_OP as FUSED_MATMUL_NBITS
from edge.runtime.numpy_matmul_nbits import matmul_nbits
from edge.runtime.onnx_proto import Node

FUSED = nk.FUSED  # the domain of the steps fusion makes


@dataclass
class Step:
    """One line of the generated function: ``output = kernel(*inputs)``."""

    op: tuple[str, str]
    kernel: Callable
    inputs: list[str]
    output: str
    inplace: bool = False
    fresh: bool = True  # the output is a new array (not a view of an input or constant)
    meta: dict = field(default_factory=dict)


# Steps whose output may be a view of an input: never written in place.
VIEWS = frozenset({("", "Transpose"), ("", "Reshape"), ("", "Unsqueeze"), ("", "Slice"),
                    ("", "Identity"), (FUSED, "ConvRows"), (FUSED, "ConvPad")})


def _consumers(nodes: list[Node]) -> Counter:
    return Counter(i for n in nodes for i in n.inputs if i)


def _const_equal(values: dict, a: str, b: str) -> bool:
    if a == b:
        return True
    x, y = values.get(a), values.get(b)
    return x is not None and y is not None and x.dtype == y.dtype and np.array_equal(x, y)


def fuse_round_trips(nodes: list[Node], values: dict, outputs: set[str]) -> list[Node]:
    """``QuantizeLinear -> DequantizeLinear`` pairs (same per-tensor scale and zero point)
    become one ``QuantizeRoundTrip`` step; see the module docstring."""
    by_input: dict[str, list[Node]] = {}
    for n in nodes:
        for i in n.inputs[:1]:
            by_input.setdefault(i, []).append(n)
    uses = _consumers(nodes)
    replace: dict[int, Node] = {}
    drop: set[int] = set()
    for q in nodes:
        if (q.domain, q.op_type) not in (("", "QuantizeLinear"), ("ai.onnx", "QuantizeLinear")):
            continue
        if len(q.inputs) < 3 or q.inputs[1] not in values or q.inputs[2] not in values:
            continue
        if values[q.inputs[1]].size != 1 or q.outputs[0] in outputs:
            continue
        readers = by_input.get(q.outputs[0], [])
        if not readers or uses[q.outputs[0]] != len(readers) or not all(
                r.op_type == "DequantizeLinear" and r.domain in ("", "ai.onnx")
                and len(r.inputs) >= 3 and _const_equal(values, r.inputs[1], q.inputs[1])
                and _const_equal(values, r.inputs[2], q.inputs[2]) for r in readers):
            continue
        first, *others = readers
        drop.add(id(q))
        scale = nk.Scale(values[q.inputs[1]], values[q.inputs[2]])
        replace[id(first)] = Node("QuantizeRoundTrip", [q.inputs[0]], list(first.outputs),
                                  name=first.name, domain=FUSED, attributes={"scale": scale})
        for r in others:
            replace[id(r)] = Node("Identity", [first.outputs[0]], list(r.outputs), name=r.name)
    fused = [replace.get(id(n), n) for n in nodes if id(n) not in drop]
    return _drop_repeated_round_trips(fused, values)


# Operators whose output holds only values of their inputs (or zero): on a quantization grid
# when their inputs are.
_GRID_KEEPING = frozenset({"Reshape", "Transpose", "Slice", "Unsqueeze", "Gather", "Identity",
                           "Concat", "Pad"})


def _drop_repeated_round_trips(nodes: list[Node], values: dict) -> list[Node]:
    """A round trip of values already on its grid changes nothing: ``k * s / s`` rounds back
    to the integer ``k`` (the float32 error is below 1e-4 step for |k| <= 255), so it
    becomes an Identity. The grid of a tensor: the round trip that made it, through
    operators that only move values (and Pad with zeros or edges)."""
    grid: dict[str, tuple] = {}
    out = []
    for n in nodes:
        if n.op_type == "QuantizeRoundTrip":
            q = n.attributes["scale"]
            key = (float(q.s), float(q.z), q.dtype.str)
            if grid.get(n.inputs[0]) == key:
                n = Node("Identity", [n.inputs[0]], list(n.outputs), name=n.name)
            grid[n.outputs[0]] = key
        elif n.op_type in _GRID_KEEPING and n.domain in ("", "ai.onnx"):
            data = n.inputs if n.op_type == "Concat" else n.inputs[:1]
            keys = {grid.get(i) for i in data}
            fill = values.get(n.inputs[2]) if n.op_type == "Pad" and len(n.inputs) > 2 \
                and n.inputs[2] else None
            if len(keys) == 1 and None not in keys and (fill is None or not fill.any()):
                grid[n.outputs[0]] = keys.pop()
        out.append(n)
    return out


def fuse_counts(nodes: list[Node], values: dict, outputs: set[str]) -> list[Node]:
    """``Greater -> Cast(float) [-> Mul(0/1 mask)] -> ReduceMean/ReduceSum`` become one
    ``CountAbove`` step; see the module docstring."""
    uses = _consumers(nodes)
    replace: dict[int, Node] = {}
    drop: set[int] = set()

    def only_reader(name):
        if name in outputs or uses[name] != 1:
            return None
        return next(n for n in nodes if name in n.inputs)

    for g in nodes:
        if g.op_type != "Greater" or g.domain not in ("", "ai.onnx"):
            continue
        cast = only_reader(g.outputs[0])
        if cast is None or cast.op_type != "Cast" or cast.attributes.get("to") != 1:
            continue
        nxt, mask = only_reader(cast.outputs[0]), None
        chain = [g, cast]
        if nxt is not None and nxt.op_type == "Mul":
            other = [i for i in nxt.inputs if i != cast.outputs[0]]
            m = values.get(other[0]) if len(other) == 1 else None
            if m is None or not np.all((m == 0) | (m == 1)):
                continue
            mask = m.astype(bool)
            chain.append(nxt)
            nxt = only_reader(nxt.outputs[0])
        if nxt is None or nxt.op_type not in ("ReduceMean", "ReduceSum") or (
                mask is not None and nxt.op_type != "ReduceSum"):
            continue
        if len(nxt.inputs) > 1 and nxt.inputs[1] and nxt.inputs[1] not in values:
            continue
        chain.append(nxt)
        for n in chain[:-1]:
            drop.add(id(n))
        replace[id(nxt)] = Node(
            "CountAbove", [g.inputs[0], g.inputs[1]] + list(nxt.inputs[1:2]), list(nxt.outputs),
            name=nxt.name, domain=FUSED,
            attributes=dict(nxt.attributes, mean=nxt.op_type == "ReduceMean", mask=mask))
    return [replace.get(id(n), n) for n in nodes if id(n) not in drop]


def count_above(attrs: dict, consts) -> Callable:
    """The kernel of a fused ``CountAbove`` step (see :func:`fuse_counts`)."""
    mean, mask = attrs["mean"], attrs["mask"]
    keep = bool(attrs.get("keepdims", 1))
    if attrs.get("noop_with_empty_axes", 0):
        raise nk.UnsupportedModel("noop_with_empty_axes=1 is not supported")
    axes = nk._axes(attrs, consts, 2)
    reduce, greater, f32 = np.add.reduce, np.greater, np.float32

    def run(a, b, _axes=None):
        above = greater(a, b)
        if mask is not None:
            above = above & mask
        # Cast, then a plain float32 sum: faster than summing booleans with dtype=float32
        # (measured 15 against 31 us on a [1, 42, 2, 64] count).
        total = reduce(above.astype(f32), axis=axes, keepdims=keep)
        if mean:
            np.divide(total, f32(above.size // max(total.size, 1)), out=total)
        return total
    return run


def group_convs(nodes: list[Node], values: dict) -> list[Node]:
    """Conv nodes on one input share one zero-padded copy of it (``ConvPad``, at the first
    one's place); those with the same dilation, stride and kernel size become one
    ``ConvGroup`` step (one gather of the taps, one matmul of the stacked kernels) and a
    ``ConvRows`` view per node. Strided nodes group only with the same pads (their output
    grids would not line up)."""
    by_input: dict[str, list[tuple[Node, nk.ConvSpec]]] = {}
    for n in nodes:
        if n.op_type != "Conv" or n.domain not in ("", "ai.onnx"):
            continue
        consts = tuple(values.get(i) if i else None for i in n.inputs)
        by_input.setdefault(n.inputs[0], []).append((n, nk.conv_spec(n.attributes, consts)))
    before: dict[int, list[Node]] = {}  # id(node) -> the steps that replace it
    for x, convs in by_input.items():
        pad_in = max(max(spec.pads) for _, spec in convs)
        padded = f"{x}__padded"
        before[id(convs[0][0])] = [Node("ConvPad", [x], [padded], name=padded, domain=FUSED,
                                        attributes={"pad": pad_in})]
        groups: dict[tuple, list[tuple[Node, nk.ConvSpec]]] = {}
        for n, spec in convs:
            key = (spec.dilation, spec.stride, spec.kernels.shape[1:],
                   spec.pads if spec.stride > 1 else None)
            groups.setdefault(key, []).append((n, spec))
        for members in groups.values():
            first = members[0][1]
            pad = max(max(spec.pads) for _, spec in members)
            pads = first.pads if first.stride > 1 else (pad, pad)
            kernels = np.concatenate([spec.kernels for _, spec in members])
            biases = [values.get(m.inputs[2]) if len(m.inputs) > 2 and m.inputs[2] else None
                      for m, _ in members]
            bias = None if all(b is None for b in biases) else np.concatenate(
                [np.zeros(spec.kernels.shape[0], np.float32) if b is None else b.reshape(-1)
                 for (_, spec), b in zip(members, biases, strict=True)]).astype(np.float32)
            stacked = f"{members[0][0].outputs[0]}__stacked"
            group = Node("ConvGroup", [padded], [stacked], name=stacked, domain=FUSED,
                         attributes={"spec": nk.ConvSpec(kernels, first.dilation,
                                                          first.stride, pads),
                                     "bias": bias, "pad_in": pad_in})
            row = 0
            for i, (m, spec) in enumerate(members):
                rows = slice(row, row + spec.kernels.shape[0])
                row += spec.kernels.shape[0]
                left, right = spec.pads
                cols = slice(pads[0] - left, -(pads[1] - right) or None)
                view = Node("ConvRows", [stacked], list(m.outputs), name=m.name, domain=FUSED,
                            attributes={"index": (slice(None), rows, cols)})
                before.setdefault(id(m), []).extend([group, view] if i == 0 else [view])
    out = []
    for n in nodes:
        out.extend(before.get(id(n), [n]))
    return out


def conv_pad(pad: int) -> Callable:
    """``[B, C, T] -> [B, C, T + 2 pad]``, zeros either side (shared by an input's Convs)."""
    if not pad:
        return lambda x: x

    def run(x):
        n, c, t = x.shape
        xp = np.zeros((n, c, t + 2 * pad), x.dtype)
        xp[:, :, pad:pad + t] = x
        return xp
    return run


# Up to this many series (batch x channels) a ConvGroup gathers its taps with np.take.
_TAKE_SERIES = 4


def conv_group(spec: nk.ConvSpec, bias: np.ndarray | None, pad_in: int) -> Callable:
    """Stacked 1-D convolutions of an input padded by ``pad_in`` either side: ``taps[b, c,
    j, t] = xp[b, c, pad_in - pads[0] + t stride + j d]``, then one matmul of the flattened
    kernels ``[K, C k]`` with the taps ``[B, C k, T']``.

    The taps are gathered with ``np.take`` and one index array (made once per input length)
    for a few series (a batch of one window), copied from a strided view for more: each is
    the faster there (measured, [1-64, 2, 722] gathers of [9, 181]: take 9 us at batch 1
    against 14 for the view and 40 for ``xp[:, :, index]``; at 64, 310 / 120 / 180 us)."""
    w = spec.kernels
    k = w.shape[2]
    w2 = np.ascontiguousarray(w.reshape(w.shape[0], -1))
    b = None if bias is None else bias.reshape(1, -1, 1)
    index_of: dict[int, np.ndarray] = {}
    offset = pad_in - spec.pads[0]
    take, as_strided = np.take, np.lib.stride_tricks.as_strided

    def run(xp):
        n, c, t = xp.shape
        index = index_of.get(t)
        if index is None:
            out_t = spec.out_len(t - 2 * pad_in)
            index = index_of[t] = (offset + spec.stride * np.arange(out_t)[None, :]
                                   + spec.dilation * np.arange(k)[:, None])
        if n * c <= _TAKE_SERIES:
            taps = take(xp, index, axis=2)  # [B, C, k, T']
        else:
            s0, s1, s2 = xp.strides
            taps = as_strided(xp[:, :, offset:], (n, c, k, index.shape[1]),
                              (s0, s1, s2 * spec.dilation, s2 * spec.stride), writeable=False)
        out = np.matmul(w2, taps.reshape(n, c * k, index.shape[1]))
        if b is not None:
            out += b
        return out
    return run


# Where a QOperator node's output scale and zero point are (inputs), and where the scale and
# zero point of each input that may arrive as steps are.
_OUT_SCALE = {("", "QuantizeLinear"): 1, ("", "QLinearMatMul"): 6,
              ("com.microsoft", "QLinearAdd"): 6, ("com.microsoft", "QLinearMul"): 6,
              ("com.microsoft", "QLinearSigmoid"): 3, ("com.microsoft", "QLinearSoftmax"): 3}
_IN_SCALE = {0: 1, 3: 4}


def _op(n: Node) -> tuple[str, str]:
    return ("" if n.domain in ("", "ai.onnx") else n.domain, n.op_type)


def int8_as_steps(nodes: list[Node], values: dict, outputs: set[str]) -> list[Node]:
    """Pass int8 tensors between QOperator nodes as float32 steps (``code - zero point``,
    see :meth:`~edge.runtime.numpy_kernels.Scale.to_steps`) where the producer and every
    reader can, with the same scale and zero point: saves the conversion to int8 and the
    table lookup at every int8 edge (the kernels get ``steps_in`` / ``steps_out``)."""
    readers: dict[str, list[tuple[Node, int]]] = {}
    for n in nodes:
        for k, i in enumerate(n.inputs):
            if i:
                readers.setdefault(i, []).append((n, k))
    steps_in: dict[int, set[int]] = {}
    steps_out: set[int] = set()
    for n in nodes:
        op = _op(n)
        if op not in nk.STEPS_OUT or n.outputs[0] in outputs:
            continue
        at = _OUT_SCALE[op]
        if len(n.inputs) <= at + 1 or n.inputs[at] not in values \
                or n.inputs[at + 1] not in values or values[n.inputs[at]].size != 1:
            continue
        ok = bool(readers.get(n.outputs[0]))
        for r, k in readers.get(n.outputs[0], []):
            pos = _IN_SCALE.get(k)
            if (k not in nk.STEPS_IN.get(_op(r), ()) or len(r.inputs) <= pos + 1
                    or not _const_equal(values, r.inputs[pos], n.inputs[at])
                    or not _const_equal(values, r.inputs[pos + 1], n.inputs[at + 1])):
                ok = False
                break
        if ok:
            steps_out.add(id(n))
            for r, k in readers[n.outputs[0]]:
                steps_in.setdefault(id(r), set()).add(k)
    out = []
    for n in nodes:
        if id(n) in steps_out or id(n) in steps_in:
            n = Node(n.op_type, list(n.inputs), list(n.outputs), name=n.name, domain=FUSED,
                     attributes=dict(n.attributes, steps_out=id(n) in steps_out,
                                     steps_in=tuple(sorted(steps_in.get(id(n), ()))),
                                     op=_op(n)))
        out.append(n)
    return out


def fused_kernel(node: Node, consts) -> Callable:
    """The kernel of a step fusion made (domain :data:`FUSED`)."""
    a = node.attributes
    if node.op_type == "QuantizeRoundTrip":
        return a["scale"].round_trip_kernel()
    if node.op_type == "CountAbove":
        return count_above(a, consts)
    if node.op_type == "ConvPad":
        return conv_pad(a["pad"])
    if node.op_type == "ConvGroup":
        return conv_group(a["spec"], a["bias"], a["pad_in"])
    if node.op_type == "ConvRows":
        index = a["index"]
        return lambda x: x[index]
    if node.op_type == FUSED_MATMUL_NBITS:
        return matmul_nbits(a["weight"], a["scale"], a["zero_point"])
    if "op" in a:  # a QOperator node with steps (int8_as_steps)
        return nk.KERNELS[a["op"]][0](a, consts)
    raise AssertionError(node.op_type)


def plan_inplace(steps: list[Step], shapes: list[dict], outputs: set[str]) -> None:
    """Mark the steps that may write into their first input (see the module docstring).

    ``shapes``: for each probe run, ``{tensor: (shape, dtype)}`` of every step output.
    """
    fresh = {s.output for s in steps if s.fresh}
    uses = Counter(i for s in steps for i in s.inputs)
    for s in steps:
        if s.op not in nk.INPLACE and s.op != (FUSED, "QuantizeRoundTrip"):
            continue
        src = s.inputs[0]
        if src not in fresh or uses[src] != 1 or src in outputs:
            continue
        if all(src in p and p[src] == p[s.output] for p in shapes):
            s.inplace = True


def _quiet_errors() -> tuple[Callable, Callable, object]:
    """``(set, reset, state)``: ``reset(set(state))`` brackets code that runs with numpy's
    floating-point errors ignored (exp overflow in a sigmoid's tail gives the right 0).

    ``np.errstate`` builds its state object on every entry (several microseconds, a tenth
    of a small model's run); numpy >= 2 keeps it in a context variable, so the state is
    built once here and set and reset per run. Older numpy: ``np.errstate``.
    """
    try:
        from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj

        return _extobj_contextvar.set, _extobj_contextvar.reset, _make_extobj(all="ignore")
    except (ImportError, AttributeError, TypeError):
        def enter(_state):
            errstate = np.errstate(all="ignore")
            errstate.__enter__()
            return errstate
        return enter, lambda errstate: errstate.__exit__(None, None, None), None


_SET_QUIET, _RESET, _QUIET = _quiet_errors()


def generate(steps: list[Step], inputs: list[str], results: list[str],
             constants: dict[str, np.ndarray], label: str) -> Callable:
    """One Python function ``f(*inputs) -> tuple(results)`` that runs ``steps`` in order,
    with numpy's floating-point errors ignored."""
    names: dict[str, str] = {}
    namespace: dict[str, object] = {}

    def ref(tensor: str) -> str:
        if tensor not in names:
            if tensor in constants:
                names[tensor] = f"c{len(names)}"
                namespace[names[tensor]] = constants[tensor]
            else:
                names[tensor] = f"t{len(names)}"
        return names[tensor]

    params = [ref(i) for i in inputs]
    namespace.update(set_quiet=_SET_QUIET, reset=_RESET, quiet=_QUIET)
    lines = [f"def graph({', '.join(params)}):", "    token = set_quiet(quiet)", "    try:"]
    for k, s in enumerate(steps):
        namespace[f"k{k}"] = s.kernel
        args = ", ".join([ref(i) if i else "None" for i in s.inputs]
                         + ([f"out={ref(s.inputs[0])}"] if s.inplace else []))
        lines.append(f"        {ref(s.output)} = k{k}({args})")
    lines.append(f"        return ({''.join(ref(r) + ', ' for r in results)})")
    lines += ["    finally:", "        reset(token)"]
    exec(compile("\n".join(lines), f"<numpy runtime: {label}>", "exec"), namespace)  # noqa: S102
    return namespace["graph"]
