"""Run a model file with numpy alone: for Raspberry Pis onnxruntime has no wheel for.

:class:`NumpySession` reads the file with :mod:`edge.runtime.onnx_proto`, refuses at load
any operator outside :data:`edge.contract.SUPPORTED_OPS` (or an attribute value its kernel
does not implement), sorts the nodes topologically, folds every node whose inputs are all
constants (the ``DequantizeLinear`` of int8 weights, shape arithmetic) once, and compiles
the rest (:mod:`edge.runtime.numpy_compile`: fused chains, in-place steps, one generated
function of numpy calls, vectorised over the batch; kernels in
:mod:`edge.runtime.numpy_kernels`). It answers the part of onnxruntime's
``InferenceSession`` the edge uses (``run``, ``get_inputs``, ``get_outputs``,
``get_modelmeta``), so the rest of the daemon does not care which runtime serves.

Numerics: float kernels compute in float32 like onnxruntime's (sums may round in another
order: differences of a few float32 ulps). int8 kernels follow the ONNX definitions (round
half to even, saturate); where onnxruntime fuses ``DequantizeLinear -> MatMul ->
QuantizeLinear`` into integer kernels, results may differ by a quantization step: the parity
tests bound that. Weight-only ``DequantizeLinear -> MatMul`` pairs compute what
onnxruntime's ``MatMulNBits`` computes (activations rounded to int8 per row and block of
32; :mod:`edge.runtime.numpy_matmul_nbits`), not the float product the graph spells.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from edge.contract import SUPPORTED_OPS, op_name
from edge.runtime import numpy_compile as nc
from edge.runtime.numpy_kernels import (  # noqa: F401  (KERNELS, UnsupportedModel: API)
    KERNELS,
    UnsupportedModel,
    dequantize,
    quantize,
)
from edge.runtime.numpy_matmul_nbits import fuse_weight_only
from edge.runtime.onnx_proto import DTYPES, TYPE_NAMES, Node, ProtoError, read_model

# Domains whose operators we run: the ONNX standard and onnxruntime's com.microsoft
# contrib ops that onnxruntime's quantizer writes in QOperator format.
DOMAINS = {"": "", "ai.onnx": "", "com.microsoft": "com.microsoft"}


@dataclass(frozen=True)
class Arg:
    """A graph input or output, as onnxruntime's ``NodeArg`` shows it."""

    name: str
    type: str
    shape: list


@dataclass(frozen=True)
class ModelMeta:
    custom_metadata_map: dict[str, str]


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
    optimize : bool
        Fuse chains and write in place (:mod:`edge.runtime.numpy_compile`); False runs
        one kernel per node, for tests that check the fused steps compute the same.
        Weight-only ``DequantizeLinear -> MatMul`` pairs run as one ``MatMulNBits`` step
        either way: that is what they compute here, not an optimization.

    Raises
    ------
    UnsupportedModel
        If the file is not a model this runtime can run; the message names the operator,
        attribute or part that is not supported.
    """

    runtime = "numpy"

    def __init__(self, model: bytes | str, optimize: bool = True):
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
        input_names = [a.name for a in self._inputs]
        order = _topological(graph.nodes, set(values) | set(input_names))
        output_names = [o.name for o in self._outputs]
        # onnxruntime's numerics for weight-only int8 MatMuls (always: not an optimization)
        order = fuse_weight_only(order, values, {v.name for v in graph.inputs},
                                 set(output_names))
        dynamic, kernels = self._fold_constants(order, values)
        steps, alias = _steps(dynamic, kernels, values, set(output_names), optimize)
        results = [alias.get(o, o) for o in output_names]
        made = set(input_names) | set(values) | {s.output for s in steps}
        for o, r in zip(output_names, results, strict=True):
            if r not in made:
                raise UnsupportedModel(f"graph output {o!r} is made by no node")
        probes = _probe(steps, self._inputs, values) if optimize else None
        if probes:
            nc.plan_inplace(steps, probes, set(results))
        self._steps = steps  # for profiling a model step by step
        self._graph = nc.generate(steps, input_names, results, values,
                                  graph.name or "model")
        self._index = {o: k for k, o in enumerate(output_names)}
        self._checks = [(a.name, a.type == "tensor(float)") for a in self._inputs]

    @staticmethod
    def _fold_constants(order: list[Node], values: dict) -> tuple[list[Node], dict]:
        """Compute the nodes whose inputs are all constants into ``values``; return the
        others with their kernels (made now, so a bad attribute fails at load, by name)."""
        dynamic, kernels = [], {}
        with np.errstate(all="ignore"):
            for node in order:
                if node.domain == nc.FUSED:  # made by fuse_weight_only, checked there
                    factory = functools.partial(_fused_factory, node)
                    allowed = frozenset(node.attributes)
                else:
                    factory, allowed = KERNELS[(DOMAINS[node.domain], node.op_type)]
                extra = sorted(set(node.attributes) - allowed)
                if extra:
                    raise UnsupportedModel(f"{node.op_type} node {node.name!r}: attribute(s) "
                                           f"{extra} not supported by the numpy runtime")
                if len(node.outputs) != 1:
                    raise UnsupportedModel(f"{node.op_type} node {node.name!r}: "
                                           f"{len(node.outputs)} outputs, expected 1")
                consts = tuple(values.get(i) if i else None for i in node.inputs)
                try:
                    kernel = factory(node.attributes, consts)
                except UnsupportedModel as e:
                    raise UnsupportedModel(f"{node.op_type} node {node.name!r}: {e}") from None
                if all(not i or i in values for i in node.inputs):
                    # Constant: compute once now (dequantized weights, shape arithmetic).
                    values[node.outputs[0]] = np.asarray(kernel(*consts))
                    continue
                dynamic.append(node)
                kernels[id(node)] = kernel
        return dynamic, kernels

    def get_inputs(self) -> list[Arg]:
        return list(self._inputs)

    def get_outputs(self) -> list[Arg]:
        return list(self._outputs)

    def get_modelmeta(self) -> ModelMeta:
        return self._meta

    def run(self, output_names, input_feed: dict) -> list[np.ndarray]:
        """Outputs ``output_names`` (all when None) for ``input_feed`` {name: array}."""
        args = []
        for name, is_float in self._checks:
            try:
                x = input_feed[name]
            except KeyError:
                raise ValueError(f"missing input {name!r}") from None
            if is_float and x.dtype != np.float32:
                raise ValueError(f"input {name!r} must be float32, got {x.dtype}")
            args.append(x)
        out = self._graph(*args)  # ignores floating-point errors itself
        if output_names is None:
            return list(out)
        return [out[self._index[name]] for name in output_names]


def _fused_factory(node: Node, _attrs: dict, consts) -> object:
    return nc.fused_kernel(node, consts)


def _steps(nodes: list[Node], kernels: dict, values: dict, outputs: set[str],
           optimize: bool = True) -> tuple[list[nc.Step], dict[str, str]]:
    """Fused, alias-resolved steps of the dynamic ``nodes``, and the Identity aliases."""
    if optimize:
        nodes = nc.fuse_round_trips(nodes, values, outputs)
        nodes = nc.fuse_counts(nodes, values, outputs)
        nodes = nc.group_convs(nodes, values)
        nodes = nc.int8_as_steps(nodes, values, outputs)
    alias: dict[str, str] = {}
    steps = []
    for n in nodes:
        inputs = [alias.get(i, i) for i in n.inputs]
        op = (nc.FUSED if n.domain == nc.FUSED else DOMAINS[n.domain], n.op_type)
        if op == ("", "Identity"):
            alias[n.outputs[0]] = inputs[0]
            continue
        kernel = kernels.get(id(n))
        if kernel is None:
            consts = tuple(values.get(i) if i else None for i in inputs)
            kernel = (nc.fused_kernel(n, consts) if n.domain == nc.FUSED
                      else KERNELS[op][0](n.attributes, consts))
        steps.append(nc.Step(op, kernel, inputs, n.outputs[0], fresh=op not in nc.VIEWS))
    return steps, alias


def _probe(steps: list[nc.Step], inputs: list[Arg], values: dict) -> list[dict] | None:
    """Shapes and dtypes of every step output for zero inputs of batch 1 and 2 (None when
    an input's other dimensions are not fixed, or the probe fails): for in-place planning."""
    runs = []
    for batch in (1, 2):
        env = dict(values)
        for a in inputs:
            dims = a.shape[1:]
            code = next((c for c, n in TYPE_NAMES.items() if f"tensor({n})" == a.type), None)
            if not a.shape or code not in DTYPES or not all(
                    isinstance(d, int) and d > 0 for d in dims):
                return None
            env[a.name] = np.zeros([batch, *dims], DTYPES[code])
        shapes = {}
        try:
            with np.errstate(all="ignore"):
                for s in steps:
                    y = s.kernel(*[env[i] if i else None for i in s.inputs])
                    env[s.output] = y
                    shapes[s.output] = (np.shape(y), np.asarray(y).dtype)
        except Exception:  # noqa: BLE001  a probe that cannot run only disables in-place
            return None
        for a in inputs:
            shapes[a.name] = (env[a.name].shape, env[a.name].dtype)
        runs.append(shapes)
    return runs


def _type_name(code: int) -> str:
    return f"tensor({TYPE_NAMES.get(code, 'unknown')})"
