"""Which decoder reads a payload: JSON, binary sample blocks, CBOR (``--payload``).

``json`` (the default) reads JSON and also every message that starts with the binary
block magic (:mod:`edge.payload_binary`), so a site can mix both. Under MQTT 5 a message's
content type chooses too: ``application/cbor``, ``application/json`` or
:data:`edge.payload_binary.CONTENT_TYPE`. ``binary`` reads blocks only; ``cbor`` reads
CBOR with the same object/array/batch shapes as JSON (and blocks by their magic).
Sparkplug B needs the topic and state per edge node, so it is not here but in
:mod:`edge.sparkplug`.
"""

from __future__ import annotations

from edge.payload import PayloadParser, Rejected
from edge.payload_binary import CONTENT_TYPE as BLOCK_TYPE
from edge.payload_binary import MAGIC, parse_block

FORMATS = ("json", "binary", "cbor", "sparkplug")
EXTRAS = {"cbor": ("cbor2", "cbor"), "sparkplug": ("google.protobuf", "sparkplug")}
CBOR_TYPE = "application/cbor"
JSON_TYPE = "application/json"


def check_available(fmt: str) -> None:
    """Raise ImportError with the install command when ``fmt`` needs a missing extra."""
    need = EXTRAS.get(fmt)
    if need is None:
        return
    module, extra = need
    try:
        __import__(module)
    except ImportError:
        raise ImportError(
            f"--payload {fmt} needs the '{extra}' extra ({module} is not installed): "
            f"pip install 'sigmoid-edge[{extra}]'"
        ) from None


def _cbor_loads():
    try:
        import cbor2
    except ImportError:
        return None

    def loads(payload: bytes, max_depth: int):
        try:
            doc = cbor2.loads(payload, max_depth=max_depth)
        except TypeError:  # a cbor2 without max_depth: its own limit (400) still holds
            doc = cbor2.loads(payload)
        # cbor2 < 6 in pure Python (no compiler on a 32-bit Pi) returns its break marker for
        # a stray break code (0xff) where 6.x raises: the same invalid CBOR either way.
        if type(doc).__name__ == "BreakMarkerType":
            raise ValueError("a break code (0xff) outside an indefinite-length item")
        return doc

    return loads


class Decoder:
    """Bytes (and an MQTT 5 content type) -> samples, for one model's channels.

    Parameters
    ----------
    fmt : {"json", "binary", "cbor"}
        What a message without a content type is.
    parser : PayloadParser
        The JSON parser; its shape rules also read CBOR documents.

    Notes
    -----
    :meth:`parse` returns what :meth:`edge.payload.PayloadParser.parse` returns.
    """

    def __init__(self, fmt: str, parser: PayloadParser):
        if fmt not in FORMATS or fmt == "sparkplug":
            raise ValueError(f"payload format must be json, binary or cbor, got {fmt!r}")
        self.fmt = fmt
        self.parser = parser
        self.channels = parser.channels
        self._cbor = _cbor_loads()
        if fmt == "cbor" and self._cbor is None:
            check_available("cbor")

    def parse(self, payload: bytes, content_type: str | None = None):
        """Decode one payload; raises :class:`edge.payload.Rejected`."""
        parser = self.parser
        if content_type:
            kind = content_type.partition(";")[0].strip().lower()
            if kind == CBOR_TYPE:
                return self._parse_cbor(payload)
            if kind == BLOCK_TYPE:
                return self._parse_block(payload)
            if kind == JSON_TYPE:
                return parser.parse(payload)
        if payload.startswith(MAGIC) or self.fmt == "binary":
            return self._parse_block(payload)
        if self.fmt == "cbor":
            return self._parse_cbor(payload)
        return parser.parse(payload)

    def parse_message(self, msg):
        """:meth:`parse` of a paho message, with its MQTT 5 content type if it has one."""
        props = msg.properties
        return self.parse(msg.payload, getattr(props, "ContentType", None) if props else None)

    def _parse_block(self, payload: bytes):
        if len(payload) > self.parser.max_bytes:
            raise Rejected("too_large", f"{len(payload)} bytes > max_payload_bytes "
                                        f"{self.parser.max_bytes}")
        return parse_block(payload, self.parser.width)

    def _parse_cbor(self, payload: bytes):
        parser = self.parser
        if self._cbor is None:
            raise Rejected("unsupported_format", "a CBOR message, and cbor2 is not installed: "
                                                 "pip install 'sigmoid-edge[cbor]'")
        if len(payload) > parser.max_bytes:
            raise Rejected("too_large", f"{len(payload)} bytes > max_payload_bytes "
                                        f"{parser.max_bytes}")
        try:
            doc = self._cbor(payload, parser.max_depth + 1)
        except RecursionError:
            raise Rejected("too_deep", "nesting too deep for the CBOR decoder") from None
        except Exception as e:  # cbor2 raises CBORDecodeError, ValueError, TypeError, ...
            if "depth" in str(e):
                raise Rejected("too_deep", f"CBOR nesting deeper than max_depth "
                                           f"{parser.max_depth}") from None
            raise Rejected("invalid_cbor", f"{type(e).__name__}: {e}"[:120]) from None
        return parser.parse_document(doc)
