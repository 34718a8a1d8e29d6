"""Write the ONNX models the edge tests build, without the ``onnx`` package.

``onnx`` has no wheel for 32-bit ARM and Debian's python3-onnx cannot write opset 18, so on a
board (deploy/armhf/verify.sh) the tests build their models with this writer instead of
:mod:`trainer.graph`. Its :class:`GraphBuilder` names everything as the trainer's does (the
same :class:`trainer.graph_names.GraphNames`) and serializes what the ``onnx.helper`` calls
behind the trainer's make, field for field: a model written here has the very bytes ``onnx``
writes for it (tests/test_onnx_writer.py checks that where ``onnx`` is installed). It is the
mirror of the daemon's reader (:mod:`edge.protowire`, :mod:`edge.runtime.onnx_proto`) for
the few messages a model uses; there is no checker.
"""

from __future__ import annotations

import struct

import numpy as np

from trainer.graph_names import GraphNames

OPSET = 18  # trainer.graph.OPSET
IR_VERSION = 10  # trainer.graph caps onnx's IR version at 10
FLOAT = 1  # TensorProto.FLOAT

# numpy dtype -> TensorProto.DataType, for the initializers tests use.
DATA_TYPES = {np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3,
              np.dtype(np.int32): 6, np.dtype(np.int64): 7, np.dtype(np.bool_): 9,
              np.dtype(np.float64): 11}
# AttributeProto.AttributeType
ATTR_FLOAT, ATTR_INT, ATTR_STRING, ATTR_FLOATS, ATTR_INTS = 1, 2, 3, 6, 7


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64: ten bytes of two's complement, as protobuf does
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _bytes(number: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else bytes(value)
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _float(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def _attribute(name: str, value) -> bytes:
    """``onnx.helper.make_attribute`` for the scalar and list attributes the tests use."""
    out = _bytes(1, name)
    if isinstance(value, (bool, int, np.integer)):
        return out + _int(3, int(value)) + _int(20, ATTR_INT)
    if isinstance(value, (float, np.floating)):
        return out + _float(2, float(value)) + _int(20, ATTR_FLOAT)
    if isinstance(value, (str, bytes)):
        return out + _bytes(4, value) + _int(20, ATTR_STRING)
    values = list(value)
    if values and all(isinstance(v, (int, np.integer)) for v in values):
        return out + b"".join(_int(8, int(v)) for v in values) + _int(20, ATTR_INTS)
    if values and all(isinstance(v, (int, float, np.number)) for v in values):
        return out + b"".join(_float(7, float(v)) for v in values) + _int(20, ATTR_FLOATS)
    raise TypeError(f"attribute {name}: the test writer has no encoding for {value!r}")


def _node(op_type: str, inputs: list[str], outputs: list[str], name: str, attrs) -> bytes:
    """``onnx.helper.make_node``: attributes sorted by name, None ones left out."""
    return (b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs)
            + _bytes(3, name) + _bytes(4, op_type)
            + b"".join(_bytes(5, _attribute(k, v)) for k, v in sorted(attrs.items())
                       if v is not None))


def _tensor(name: str, array: np.ndarray) -> bytes:
    """``onnx.numpy_helper.from_array``: dims, data type, name, little-endian raw data."""
    try:
        data_type = DATA_TYPES[array.dtype]
    except KeyError:
        raise TypeError(f"tensor {name}: the test writer has no type for {array.dtype}") from None
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return (b"".join(_int(1, d) for d in array.shape) + _int(2, data_type) + _bytes(8, name)
            + _bytes(9, raw))


def float_input(name: str, shape: list | None) -> bytes:
    """A float32 graph input or output (a ValueInfoProto); ``None`` or a string in ``shape``
    is a dynamic axis, as in :func:`trainer.graph.float_input`."""
    tensor_type = _int(1, FLOAT)
    if shape is not None:
        dims = b"".join(_bytes(1, b"" if d is None else _bytes(2, d) if isinstance(d, str)
                               else _int(1, d)) for d in shape)
        tensor_type += _bytes(2, dims)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


class Model:
    """A serialized ModelProto, with the one method of ``onnx.ModelProto`` tests call."""

    def __init__(self, data: bytes):
        self.data = data

    def SerializeToString(self) -> bytes:  # noqa: N802 (protobuf's name)
        return self.data


class GraphBuilder(GraphNames):
    """:class:`trainer.graph.GraphBuilder` without ``onnx``: the same names, the same
    nodes and initializers, as serialized messages."""

    def _node(self, op_type, inputs, outputs, name, attrs) -> bytes:
        return _node(op_type, inputs, outputs, name, attrs)

    def _tensor(self, array, name) -> bytes:
        return _tensor(name, array)

    def model(self, inputs: list[bytes], outputs: list[bytes],
              metadata: dict[str, str] | None = None, doc: str = "") -> Model:
        """The ModelProto ``trainer.graph`` makes of the same graph (not checked)."""
        graph = (b"".join(_bytes(1, n) for n in self.nodes) + _bytes(2, self.name)
                 + b"".join(_bytes(5, t) for t in self.initializers)
                 + b"".join(_bytes(11, i) for i in inputs)
                 + b"".join(_bytes(12, o) for o in outputs))
        data = (_int(1, IR_VERSION) + _bytes(2, "sigmoid-edge") + _bytes(6, doc)
                + _bytes(7, graph) + _bytes(8, _bytes(1, "") + _int(2, OPSET))
                + b"".join(_bytes(14, _bytes(1, k) + _bytes(2, v))
                           for k, v in (metadata or {}).items()))
        return Model(data)
