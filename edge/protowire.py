"""The protobuf wire format, read without a protobuf library (no ``onnx`` on a Pi).

One reader for the two places that parse a model file's bytes: the op check at load
(:func:`edge.contract.model_ops`) and the numpy runtime (:mod:`edge.runtime.onnx_proto`).
"""

from __future__ import annotations


class ProtoError(ValueError):
    """The bytes are not an ONNX model this reader can use; the message says why."""


# Wire types.
VARINT, I64, LEN, I32 = 0, 1, 2, 5


def varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    result = shift = 0
    while True:
        try:
            b = buf[pos]
        except IndexError:
            raise ProtoError("truncated varint: the model file is cut short") from None
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ProtoError("malformed varint in the model file")


def fields(buf: bytes):
    """Yield ``(field_number, wire_type, value)``; LEN values are memoryview slices."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = varint(buf, pos)
        elif wire == LEN:
            size, pos = varint(buf, pos)
            if pos + size > end:
                raise ProtoError("truncated field: the model file is cut short")
            value, pos = buf[pos:pos + size], pos + size
        elif wire == I32:
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == I64:
            value, pos = buf[pos:pos + 8], pos + 8
        else:
            raise ProtoError(f"unsupported protobuf wire type {wire}: not an ONNX model file")
        if pos > end:
            raise ProtoError("truncated field: the model file is cut short")
        yield number, wire, value
