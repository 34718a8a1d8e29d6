"""A small builder for ONNX graphs with readable, unique names.

Every part of the exported pipeline (features, scaling, network) emits its nodes into
one :class:`GraphBuilder`, next to the numpy code it mirrors. Tensor names follow the
node that makes them, so the graph reads well in Netron.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper, numpy_helper

from trainer.graph_names import GraphNames

OPSET = 18


class GraphBuilder(GraphNames):
    """Collect nodes and initializers for one ONNX graph (names: :class:`GraphNames`).

    Parameters
    ----------
    name : str
        Graph name.

    Examples
    --------
    >>> import numpy as np
    >>> g = GraphBuilder("demo")
    >>> w = g.const("weights", np.ones((3, 2), np.float32))
    >>> y = g.op("MatMul", ["x", w], name="dense")
    """

    nodes: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]

    def _node(self, op_type, inputs, outputs, name, attrs) -> onnx.NodeProto:
        return helper.make_node(op_type, inputs, outputs, name=name, **attrs)

    def _tensor(self, array, name) -> onnx.TensorProto:
        return numpy_helper.from_array(array, name)

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
