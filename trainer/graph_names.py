"""Readable, unique names for an ONNX graph being built, without the ``onnx`` package.

:class:`GraphNames` names nodes and tensors; a subclass makes the protobuf messages:
:class:`trainer.graph.GraphBuilder` with ``onnx``, the tests' writer (tests/onnx_writer.py)
byte for byte without it, so the edge tests can build models on a board that has no onnx.
"""

from __future__ import annotations

import numpy as np


class GraphNames:
    """Nodes and initializers of one graph; a tensor is named after the node that makes it.

    Subclasses implement ``_node(op_type, inputs, outputs, name, attrs)`` and
    ``_tensor(array, name)``, which return the node and the initializer to keep.

    Parameters
    ----------
    name : str
        Graph name.
    """

    def __init__(self, name: str):
        self.name = name
        self.nodes: list = []
        self.initializers: list = []
        self._used: set[str] = set()

    def _node(self, op_type: str, inputs: list[str], outputs: list[str], name: str,
              attrs: dict):
        raise NotImplementedError

    def _tensor(self, array: np.ndarray, name: str):
        raise NotImplementedError

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
        name = self.unique(name)
        self.initializers.append(self._tensor(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        """Add a node with one output; the output tensor takes the node's name."""
        return self.op_n(op_type, inputs, 1, name=name, **attrs)[0]

    def op_n(
        self, op_type: str, inputs: list[str], n_outputs: int, name: str | None = None, **attrs
    ) -> list[str]:
        """Add a node with ``n_outputs`` outputs, named ``<node>`` , ``<node>_1``, ..."""
        node_name = self.unique(name or op_type.lower())
        outputs = [node_name] + [self.unique(f"{node_name}_{i}") for i in range(1, n_outputs)]
        self.nodes.append(self._node(op_type, inputs, outputs, node_name, attrs))
        return outputs

    def rename(self, tensor: str, new_name: str) -> str:
        """Give ``tensor`` a fixed public name (for graph outputs) with an Identity node."""
        self._used.add(new_name)
        self.nodes.append(self._node("Identity", [tensor], [new_name], new_name, {}))
        return new_name
