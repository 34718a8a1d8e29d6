"""A small builder for ONNX graphs with readable, unique names.

Every part of the exported pipeline (features, scaling, network) emits its nodes into
one :class:`GraphBuilder`, next to the numpy code it mirrors. Tensor names follow the
node that makes them, so the graph reads well in Netron.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18


class GraphBuilder:
    """Collect nodes and initializers for one ONNX graph.

    Parameters
    ----------
    name : str
        Graph name.

    Examples
    --------
    >>> g = GraphBuilder("demo")
    >>> w = g.const("weights", np.ones((3, 2), np.float32))
    >>> y = g.op("MatMul", ["x", w], name="dense")
    """

    def __init__(self, name: str):
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._used: set[str] = set()

    def unique(self, base: str) -> str:
        """Return ``base``, or ``base_2``, ``base_3``... if it is taken."""
        name, i = base, 1
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def const(self, name: str, value) -> str:
        """Add a constant tensor (numpy array or Python scalar/list) and return its name."""
        array = np.asarray(value)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        tensor = numpy_helper.from_array(array, self.unique(name))
        self.initializers.append(tensor)
        return tensor.name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        """Add a node with one output; the output tensor takes the node's name."""
        return self.op_n(op_type, inputs, 1, name=name, **attrs)[0]

    def op_n(
        self, op_type: str, inputs: list[str], n_outputs: int, name: str | None = None, **attrs
    ) -> list[str]:
        """Add a node with ``n_outputs`` outputs, named ``<node>`` , ``<node>_1``, ..."""
        node_name = self.unique(name or op_type.lower())
        outputs = [node_name] + [self.unique(f"{node_name}_{i}") for i in range(1, n_outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=node_name, **attrs))
        return outputs

    def rename(self, tensor: str, new_name: str) -> str:
        """Give ``tensor`` a fixed public name (for graph outputs) with an Identity node."""
        self._used.add(new_name)
        self.nodes.append(helper.make_node("Identity", [tensor], [new_name], name=new_name))
        return new_name

    def model(
        self,
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
        metadata: dict[str, str] | None = None,
        doc: str = "",
    ) -> onnx.ModelProto:
        """Assemble, shape-infer and fully check the model.

        Raises
        ------
        onnx.checker.ValidationError
            If the graph is not valid ONNX.
        """
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="sigmoid-edge",
            doc_string=doc,
        )
        model.ir_version = min(model.ir_version, 10)  # readable by onnxruntime >= 1.20
        for key, value in (metadata or {}).items():
            model.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(model, full_check=True)
        return model


def float_input(name: str, shape: list) -> onnx.ValueInfoProto:
    """A float32 graph input or output; ``None`` or a string in ``shape`` is a dynamic axis."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
