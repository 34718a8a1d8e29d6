"""A minimal reader of the ONNX protobuf wire format, for the numpy runtime.

The ``onnx`` package stays a trainer-only dependency (it pulls protobuf and a C++ build that
has no armv6 wheel), and a model file uses only a few message types, so the numpy runtime
decodes them here: ``ModelProto``, ``GraphProto``, ``NodeProto``, ``AttributeProto``,
``TensorProto`` (``raw_data`` and the typed ``*_data`` fields) and ``ValueInfoProto``, with
field numbers from ``onnx/onnx.proto``. Fields it does not know are skipped, as protobuf
does. Tensors stored outside the file (``data_location = EXTERNAL``), sparse initializers,
subgraphs and functions are refused with :class:`ProtoError`: the trainer never writes them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from edge.protowire import I32 as _I32
from edge.protowire import I64 as _I64
from edge.protowire import VARINT as _VARINT
from edge.protowire import ProtoError
from edge.protowire import fields as _fields
from edge.protowire import varint as _varint

# TensorProto.DataType -> numpy dtype (the types an ONNX model of ours can hold).
DTYPES = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
    7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
}
TYPE_NAMES = {1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
              7: "int64", 9: "bool", 10: "float16", 11: "double", 12: "uint32", 13: "uint64"}

def _signed(v: int) -> int:
    """A varint read as int64 (negative numbers are 10-byte two's complement)."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(wire: int, value, out: list[int]) -> None:
    """A repeated int64 field, packed or not."""
    if wire == _VARINT:
        out.append(_signed(value))
        return
    buf, pos = bytes(value), 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        out.append(_signed(v))


def _floats(wire: int, value, out: list[float]) -> None:
    if wire == _I32:
        out.append(struct.unpack("<f", value)[0])
    else:
        out.extend(np.frombuffer(bytes(value), "<f4").tolist())


def _text(value) -> str:
    return bytes(value).decode("utf-8")


@dataclass
class Attribute:
    name: str
    value: object


@dataclass
class Node:
    op_type: str
    inputs: list[str]
    outputs: list[str]
    name: str = ""
    domain: str = ""
    attributes: dict[str, object] = field(default_factory=dict)


@dataclass
class ValueInfo:
    """A graph input or output: name, element type (``TYPE_NAMES`` key) and shape."""

    name: str
    elem_type: int = 0
    shape: list[int | str | None] | None = None


@dataclass
class Graph:
    nodes: list[Node]
    initializers: dict[str, np.ndarray]
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    name: str = ""


@dataclass
class Model:
    graph: Graph
    opsets: dict[str, int]
    metadata: dict[str, str]
    ir_version: int = 0
    producer: str = ""


def read_tensor(buf) -> tuple[str, np.ndarray]:
    """Decode a ``TensorProto`` into ``(name, array)``."""
    dims: list[int] = []
    dtype_code, name, raw = 1, "", None
    typed: dict[int, list] = {}
    for number, wire, value in _fields(buf):
        if number == 1:
            _ints(wire, value, dims)
        elif number == 2:
            dtype_code = value
        elif number == 8:
            name = _text(value)
        elif number == 9:
            raw = bytes(value)
        elif number == 4:
            _floats(wire, value, typed.setdefault(4, []))
        elif number in (5, 7, 11):
            _ints(wire, value, typed.setdefault(number, []))
        elif number == 10:
            typed.setdefault(10, []).extend(
                [struct.unpack("<d", value)[0]] if wire == _I64
                else np.frombuffer(bytes(value), "<f8").tolist())
        elif number in (13, 14) and (number == 13 or value == 1):
            raise ProtoError(f"tensor {name or '?'} keeps its data outside the model file "
                             "(external data); the numpy runtime reads single-file models only")
        elif number in (3, 6):
            raise ProtoError(f"tensor {name or '?'} uses segments or strings, which the "
                             "numpy runtime does not read")
    dtype = DTYPES.get(dtype_code)
    if dtype is None:
        raise ProtoError(f"tensor {name!r} has data type {dtype_code}, which the numpy "
                         "runtime does not support")
    count = int(np.prod(dims)) if dims else 1
    if raw is not None:
        array = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).astype(dtype, copy=True)
    else:
        values = next(iter(typed.values()), [])
        if dtype == np.float16:  # stored as the uint16 bit patterns in int32_data
            array = np.array(values, np.uint16).view(np.float16)
        else:
            array = np.array(values, dtype=dtype)
    if array.size != count:
        raise ProtoError(f"tensor {name!r} has {array.size} values for shape {dims}")
    return name, array.reshape(dims)


def _attribute(buf) -> Attribute:
    name, kind = "", 0
    scalars: dict[int, object] = {}
    ints: list[int] = []
    floats: list[float] = []
    strings: list[str] = []
    for number, wire, value in _fields(buf):
        if number == 1:
            name = _text(value)
        elif number == 20:
            kind = value
        elif number == 2:
            scalars[2] = struct.unpack("<f", value)[0]
        elif number == 3:
            scalars[3] = _signed(value)
        elif number == 4:
            scalars[4] = bytes(value)
        elif number == 5:
            scalars[5] = read_tensor(value)[1]
        elif number == 7:
            _floats(wire, value, floats)
        elif number == 8:
            _ints(wire, value, ints)
        elif number == 9:
            strings.append(_text(value))
        elif number in (6, 10, 11, 21, 22, 23):
            raise ProtoError(f"attribute {name or '?'} holds a graph, tensors list or a "
                             "reference, which the numpy runtime does not support")
    # AttributeType: FLOAT 1, INT 2, STRING 3, TENSOR 4, FLOATS 6, INTS 7, STRINGS 8.
    by_kind = {1: scalars.get(2, 0.0), 2: scalars.get(3, 0), 3: scalars.get(4, b""),
               4: scalars.get(5), 6: floats, 7: ints, 8: strings}
    if kind in by_kind:
        value = by_kind[kind]
    elif kind == 0:  # very old writers leave the type out: infer it from what is set
        value = next(iter(scalars.values()), None) if scalars else (ints or floats or strings)
    else:
        raise ProtoError(f"attribute {name!r} has type {kind}, which the numpy runtime "
                         "does not support")
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return Attribute(name, value)


def _node(buf) -> Node:
    node = Node("", [], [])
    for number, _, value in _fields(buf):
        if number == 1:
            node.inputs.append(_text(value))
        elif number == 2:
            node.outputs.append(_text(value))
        elif number == 3:
            node.name = _text(value)
        elif number == 4:
            node.op_type = _text(value)
        elif number == 7:
            node.domain = _text(value)
        elif number == 5:
            a = _attribute(value)
            node.attributes[a.name] = a.value
    return node


def _shape(buf) -> list[int | str | None]:
    dims: list[int | str | None] = []
    for number, _, dim in _fields(buf):
        if number != 1:
            continue
        d: int | str | None = None
        for n, _, v in _fields(dim):
            if n == 1:
                d = _signed(v)
            elif n == 2:
                d = _text(v)
        dims.append(d)
    return dims


def _value_info(buf) -> ValueInfo:
    info = ValueInfo("")
    for number, _, value in _fields(buf):
        if number == 1:
            info.name = _text(value)
        elif number == 2:
            for n, _, tensor in _fields(value):
                if n != 1:  # only tensor types
                    continue
                for tn, _, tv in _fields(tensor):
                    if tn == 1:
                        info.elem_type = tv
                    elif tn == 2:
                        info.shape = _shape(tv)
    return info


def _graph(buf) -> Graph:
    graph = Graph([], {}, [], [])
    for number, _, value in _fields(buf):
        if number == 1:
            graph.nodes.append(_node(value))
        elif number == 2:
            graph.name = _text(value)
        elif number == 5:
            name, array = read_tensor(value)
            graph.initializers[name] = array
        elif number == 11:
            graph.inputs.append(_value_info(value))
        elif number == 12:
            graph.outputs.append(_value_info(value))
        elif number == 15:
            raise ProtoError("the graph has sparse initializers, which the numpy runtime "
                             "does not read")
    return graph


def read_model(data: bytes) -> Model:
    """Decode a serialized ``ModelProto``.

    Raises
    ------
    ProtoError
        If the bytes are not a protobuf ONNX model, or use parts this reader refuses.
    """
    graph, opsets, metadata = None, {}, {}
    ir_version, producer = 0, ""
    for number, _, value in _fields(memoryview(data)):
        if number == 1:
            ir_version = value
        elif number == 2:
            producer = _text(value)
        elif number == 7:
            graph = _graph(value)
        elif number == 8:
            domain, version = "", 0
            for n, _, v in _fields(value):
                if n == 1:
                    domain = _text(v)
                elif n == 2:
                    version = v
            opsets[domain] = version
        elif number == 14:
            entry = {n: _text(v) for n, _, v in _fields(value) if n in (1, 2)}
            metadata[entry.get(1, "")] = entry.get(2, "")
        elif number == 25:
            raise ProtoError("the model defines functions, which the numpy runtime does not run")
    if graph is None or not graph.nodes:
        raise ProtoError("no graph in the file: not an ONNX model")
    return Model(graph, opsets, metadata, ir_version, producer)
