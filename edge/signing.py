"""Signed models: Ed25519 signatures, trusted keys and the model-push message.

A model file is code that decides what a factory alarm says, so the daemon accepts a new
model only when a trusted Ed25519 key signed it. The trainer signs (``sigmoid-train sign``,
``sigmoid-train push``); this module is everything the edge needs to check, and the
formats both sides share. ``cryptography`` is imported only when a key is loaded or a
signature checked, so a Pi that never uses signed models does not need it
(``pip install 'sigmoid-edge[signing]'`` adds it).

The signature (``MODEL.sig``)
-----------------------------
A signature is a small UTF-8 JSON document, written beside the model as ``MODEL.sig``::

    {"format": "sigmoid-edge-signature/1", "algorithm": "ed25519",
     "sha256": "<hex sha256 of the model file's bytes>", "size": <bytes>,
     "file": "model.int8.onnx", "name": "<model name>", "version": "<model version>",
     "signed_at": <unix seconds, integer>, "key_id": "<16 hex digits>",
     "signature": "<base64 of the 64-byte Ed25519 signature>"}

The Ed25519 signature covers :data:`SIGNING_CONTEXT` followed by the canonical JSON
(sorted keys, no spaces, ASCII) of every field except ``signature``. Signing a statement
about the hash, rather than the bare model bytes, binds the name, version and
``signed_at`` to the model too, so the edge can refuse a replayed older model
(:func:`check_not_older`). ``key_id`` is the first 16 hex digits of the sha256 of the raw
public key; it only makes error messages useful, it is never trusted.

The push message (``sigmoid-edge/{node}/model``)
-------------------------------------------------
One MQTT payload carries the signature document and the model, in this order::

    8 bytes   magic b"SEMODEL1"
    4 bytes   H, big-endian unsigned length of the signature document (1 <= H <= 65536)
    H bytes   the signature document (exactly what MODEL.sig holds)
    rest      the model file's bytes (must be ``size`` long and hash to ``sha256``)

Binary rather than JSON with base64 keeps a model push a third smaller and lets the edge
hash the model without copying it. The whole payload is bounded by ``max_bytes``
(:data:`MAX_MODEL_BYTES` by default); anything else is a :class:`SignatureError` with
``reason`` ``"malformed"`` or ``"too_large"``.

Errors
------
Every failure is a :class:`SignatureError` whose ``reason`` is one of :data:`REASONS`,
so the daemon can count rejections by kind, and whose message says what failed and what
to do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge import topics
from edge.atomic import write_files

SIGNATURE_FORMAT = "sigmoid-edge-signature/1"
ALGORITHM = "ed25519"
SIGNING_CONTEXT = b"sigmoid-edge model signature v1\n"
PUSH_MAGIC = b"SEMODEL1"
PUSH_TOPIC = topics.MODEL
MAX_HEADER_BYTES = 65536
MAX_MODEL_BYTES = 16 * 1024 * 1024
SIG_SUFFIX = ".sig"

REASONS = (
    "no_trusted_key",  # the daemon trusts no key, or none of its keys signed this model
    "bad_signature",  # the signature does not match the statement (altered or forged)
    "sha256_mismatch",  # the model bytes are not the ones that were signed
    "malformed",  # not a push message / signature document at all
    "too_large",  # over the size bound
    "replay",  # older than the model in use
    "unavailable",  # cryptography is not installed
    "bad_key",  # a key file that is not an Ed25519 PEM key
)

_HEADER = struct.Struct(">I")
_SIGNED_FIELDS = {
    "format": str,
    "algorithm": str,
    "sha256": str,
    "size": int,
    "file": str,
    "name": str,
    "version": str,
    "signed_at": int,
    "key_id": str,
}
_MAX_TEXT = 1024  # longest file / name / version accepted in a signature


class SignatureError(ValueError):
    """A model, its signature, a push message or a key was refused.

    Parameters
    ----------
    reason : str
        One of :data:`REASONS`, for counting rejections by kind.
    message : str
        What failed and what to do about it.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Signature:
    """A signed statement about one model file (the contents of ``MODEL.sig``).

    Attributes
    ----------
    sha256 : str
        Lower-case hex sha256 of the model file's bytes.
    size : int
        Length of the model file in bytes.
    file, name, version : str
        File name (a plain name, no directory) and model identity, for logs and outputs.
        Never build a path from ``file``: it comes from the network.
    signed_at : int
        When it was signed, in unix seconds; later signatures supersede earlier ones.
    key_id : str
        :func:`key_id` of the signing key (a hint, never trusted).
    signature : bytes
        The 64-byte Ed25519 signature over :meth:`signed_bytes`.
    format, algorithm : str
        :data:`SIGNATURE_FORMAT` and :data:`ALGORITHM`.
    """

    sha256: str
    size: int
    file: str
    name: str
    version: str
    signed_at: int
    key_id: str
    signature: bytes
    format: str = SIGNATURE_FORMAT
    algorithm: str = ALGORITHM

    def statement(self) -> dict[str, Any]:
        """Every signed field, as a plain dict."""
        d = asdict(self)
        del d["signature"]
        return d

    def signed_bytes(self) -> bytes:
        """The exact bytes the Ed25519 signature covers."""
        return signed_bytes(self.statement())

    def to_json(self) -> bytes:
        """The ``MODEL.sig`` document."""
        d = self.statement()
        d["signature"] = base64.b64encode(self.signature).decode("ascii")
        return (json.dumps(d, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode()


@dataclass(frozen=True)
class TrustedKey:
    """An Ed25519 public key the daemon trusts, with where it came from.

    Attributes
    ----------
    key : cryptography Ed25519PublicKey
        The key itself.
    key_id : str
        :func:`key_id` of the key.
    source : str
        The file it was read from (for messages).
    """

    key: Any
    key_id: str
    source: str


@dataclass(frozen=True)
class ModelPush:
    """A decoded (not yet verified) model push: the signature and the model bytes."""

    signature: Signature
    model: bytes


@dataclass(frozen=True)
class VerifiedModel:
    """A model whose signature a trusted key checked.

    Attributes
    ----------
    model : bytes
        The model file's bytes.
    signature : Signature
        Its signature; write ``signature.to_json()`` beside the model as ``MODEL.sig`` so
        :func:`verify_file` accepts it again after a restart.
    key : TrustedKey
        The trusted key that signed it.
    """

    model: bytes
    signature: Signature
    key: TrustedKey

    @property
    def sha256(self) -> str:
        return self.signature.sha256


def signed_bytes(statement: dict[str, Any]) -> bytes:
    """:data:`SIGNING_CONTEXT` + canonical JSON of ``statement`` (what a signature covers)."""
    canonical = json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return SIGNING_CONTEXT + canonical.encode("ascii")


def key_id(raw_public_key: bytes) -> str:
    """A short fingerprint of a raw 32-byte Ed25519 public key (16 hex digits)."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


def _crypto():
    """The parts of ``cryptography`` this module uses, imported on first use."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise SignatureError(
            "unavailable",
            "signed models need the 'cryptography' package; "
            "install it with: pip install 'sigmoid-edge[signing]'",
        ) from exc
    return serialization, ed25519, InvalidSignature


def public_key_from_pem(data: bytes, source: str = "<bytes>") -> TrustedKey:
    """Read an Ed25519 public key from PEM bytes.

    Raises
    ------
    SignatureError
        ``reason="bad_key"`` if ``data`` is not a PEM Ed25519 public key.
    """
    serialization, ed25519, _ = _crypto()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SignatureError(
            "bad_key",
            f"{source} is not a PEM public key ({exc}); use the signing.pub that "
            "'sigmoid-train keygen' wrote",
        ) from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SignatureError(
            "bad_key",
            f"{source} holds a {type(key).__name__}, not an Ed25519 public key; "
            "make one with 'sigmoid-train keygen'",
        )
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return TrustedKey(key=key, key_id=key_id(raw), source=source)


def load_public_key(path: str | Path) -> TrustedKey:
    """Load one trusted Ed25519 public key from a PEM file (``signing.pub``).

    Raises
    ------
    SignatureError
        ``reason="bad_key"`` if the file cannot be read or is not an Ed25519 public key.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SignatureError("bad_key", f"cannot read trusted key {path}: {exc.strerror}") from None
    return public_key_from_pem(data, str(path))


def load_trusted_keys(paths: Iterable[str | Path]) -> list[TrustedKey]:
    """Load every ``--trusted-key PUB`` file; an empty list means remote push is off."""
    return [load_public_key(p) for p in paths]


def parse_signature(data: bytes, source: str = "signature") -> Signature:
    """Parse a signature document (``MODEL.sig`` or a push header), checking every field.

    Raises
    ------
    SignatureError
        ``reason="malformed"`` naming the first bad field.
    """

    def bad(what: str) -> SignatureError:
        return SignatureError("malformed", f"{source}: {what}")

    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad("not a UTF-8 JSON signature document") from None
    if not isinstance(doc, dict):
        raise bad(f"expected a JSON object, got {type(doc).__name__}")
    missing = sorted((set(_SIGNED_FIELDS) | {"signature"}) - doc.keys())
    if missing:
        raise bad(f"missing field(s) {', '.join(missing)}")
    unknown = sorted(doc.keys() - set(_SIGNED_FIELDS) - {"signature"})
    if unknown:
        raise bad(f"unknown field(s) {', '.join(unknown)[:200]}; is it from a newer sigmoid-edge?")
    for name, kind in _SIGNED_FIELDS.items():
        value = doc[name]
        # bool is an int in Python; a signature never has a boolean field.
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad(f"field {name!r} must be {kind.__name__}, got {type(value).__name__}")
        if kind is str and len(value) > _MAX_TEXT:
            raise bad(f"field {name!r} is longer than {_MAX_TEXT} characters")
    if doc["format"] != SIGNATURE_FORMAT:
        raise bad(f"format {doc['format'][:80]!r} is not {SIGNATURE_FORMAT!r}")
    if doc["algorithm"] != ALGORITHM:
        raise bad(f"algorithm {doc['algorithm'][:80]!r} is not {ALGORITHM!r}")
    file = doc["file"]
    # ``file`` is for logs; still, refuse anything a careless caller could turn into a path
    # outside its directory.
    if (not file or file in (".", "..") or any(c in file for c in "/\\")
            or any(ord(c) < 32 or ord(c) == 127 for c in file)):
        raise bad(f"field 'file' must be a plain file name, got {file[:80]!r}")
    sha = doc["sha256"]
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise bad("field 'sha256' must be 64 lower-case hex digits")
    if not 0 <= doc["size"] <= MAX_MODEL_BYTES * 64:
        raise bad(f"field 'size' out of range: {doc['size']}")
    if not 0 <= doc["signed_at"] < 2**40:
        raise bad(f"field 'signed_at' out of range: {doc['signed_at']}")
    if not isinstance(doc["signature"], str):
        raise bad("field 'signature' must be a base64 string")
    try:
        sig = base64.b64decode(doc["signature"].encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise bad("field 'signature' is not valid base64") from None
    if len(sig) != 64:
        raise bad(f"field 'signature' must decode to 64 bytes, got {len(sig)}")
    fields = {k: doc[k] for k in _SIGNED_FIELDS}
    return Signature(signature=sig, **fields)


def encode_push(model: bytes, signature: Signature) -> bytes:
    """Build the payload published to ``sigmoid-edge/{node}/model``.

    Parameters
    ----------
    model : bytes
        The model file's bytes.
    signature : Signature
        Its signature (from ``trainer.signing.sign_model``).

    Returns
    -------
    bytes
        ``PUSH_MAGIC + len(header) + header + model``; see the module docstring.
    """
    header = signature.to_json()
    if len(header) > MAX_HEADER_BYTES:
        raise SignatureError("too_large", f"signature document is over {MAX_HEADER_BYTES} bytes")
    return PUSH_MAGIC + _HEADER.pack(len(header)) + header + bytes(model)


def decode_push(payload: bytes, max_bytes: int = MAX_MODEL_BYTES) -> ModelPush:
    """Split a push payload into its signature and model bytes, checking the framing.

    This checks the shape of the message only; :func:`verify_push` also checks the hash
    and the signature.

    Raises
    ------
    SignatureError
        ``reason="too_large"`` over ``max_bytes``; ``reason="malformed"`` otherwise.
    """
    payload = bytes(payload)
    if len(payload) > max_bytes:
        raise SignatureError(
            "too_large",
            f"model push of {len(payload)} bytes is over the limit of {max_bytes} bytes",
        )
    prefix = len(PUSH_MAGIC) + _HEADER.size
    if len(payload) < prefix or not payload.startswith(PUSH_MAGIC):
        raise SignatureError(
            "malformed",
            "not a sigmoid-edge model push (it must start with "
            f"{PUSH_MAGIC.decode()}); publish models with 'sigmoid-train push'",
        )
    (header_len,) = _HEADER.unpack_from(payload, len(PUSH_MAGIC))
    if not 1 <= header_len <= MAX_HEADER_BYTES or prefix + header_len > len(payload):
        raise SignatureError(
            "malformed",
            f"model push header length {header_len} does not fit a "
            f"{len(payload)}-byte message",
        )
    signature = parse_signature(payload[prefix:prefix + header_len], "model push header")
    model = payload[prefix + header_len:]
    if len(model) != signature.size:
        raise SignatureError(
            "malformed",
            f"model push carries {len(model)} model bytes but its signature is for "
            f"{signature.size} bytes (truncated message?)",
        )
    return ModelPush(signature=signature, model=model)


def verify(model: bytes, signature: Signature, keys: Iterable[TrustedKey]) -> TrustedKey:
    """Check that ``model`` is what ``signature`` describes and a trusted key signed it.

    Parameters
    ----------
    model : bytes
        The model file's bytes.
    signature : Signature
        Its signature.
    keys : iterable of TrustedKey
        The daemon's trusted keys (``--trusted-key``).

    Returns
    -------
    TrustedKey
        The key that made the signature.

    Raises
    ------
    SignatureError
        ``no_trusted_key`` when ``keys`` is empty or none of them signed it,
        ``sha256_mismatch`` when the bytes are not the signed ones,
        ``bad_signature`` when a trusted key's id matches but the signature does not.
    """
    keys = list(keys)
    what = f"model {describe(signature, short=True)}"
    if not keys:
        raise SignatureError(
            "no_trusted_key",
            f"{what} refused: no trusted key is configured, so remote model updates are off; "
            "start the daemon with --trusted-key signing.pub",
        )
    if len(model) != signature.size:
        raise SignatureError(
            "sha256_mismatch",
            f"{what} refused: it is {len(model)} bytes but {signature.size} were signed "
            "(the model file was changed after signing; sign it again)",
        )
    actual = hashlib.sha256(model).hexdigest()
    if actual != signature.sha256:
        raise SignatureError(
            "sha256_mismatch",
            f"{what} refused: its sha256 {actual[:16]}... is not the signed "
            f"{signature.sha256[:16]}... (the model file was changed after signing; "
            "sign it again)",
        )
    _, _, InvalidSignature = _crypto()
    message = signature.signed_bytes()
    for trusted in keys:
        try:
            trusted.key.verify(signature.signature, message)
        except InvalidSignature:
            continue
        return trusted
    trusted_ids = ", ".join(f"{k.key_id} ({k.source})" for k in keys)
    if any(k.key_id == signature.key_id for k in keys):
        raise SignatureError(
            "bad_signature",
            f"{what} refused: bad signature for trusted key {_show(signature.key_id)} "
            "(the signature or its statement was altered)",
        )
    raise SignatureError(
        "no_trusted_key",
        f"{what} refused: signed by key {_show(signature.key_id)}, which is not trusted "
        f"(trusted: {trusted_ids}); sign with a trusted key or add its .pub with --trusted-key",
    )


def verify_push(payload: bytes, keys: Iterable[TrustedKey],
                max_bytes: int = MAX_MODEL_BYTES,
                current: Signature | None = None) -> VerifiedModel:
    """Decode and verify a message from ``sigmoid-edge/{node}/model``.

    Parameters
    ----------
    payload : bytes
        The MQTT payload.
    keys : iterable of TrustedKey
        The daemon's trusted keys; empty means remote push is off (always refused).
    max_bytes : int
        Size bound of the whole payload.
    current : Signature, optional
        The signature of the model in use: a validly signed but older push is refused
        (:func:`check_not_older`).

    Raises
    ------
    SignatureError
        See :func:`decode_push`, :func:`verify` and :func:`check_not_older`.
    """
    keys = list(keys)
    if not keys:
        # Refuse before parsing: without a trusted key, remote push is off.
        raise SignatureError(
            "no_trusted_key",
            "model push refused: no trusted key is configured, so remote model updates are "
            "off; start the daemon with --trusted-key signing.pub",
        )
    push = decode_push(payload, max_bytes)
    key = verify(push.model, push.signature, keys)
    check_not_older(push.signature, current)
    return VerifiedModel(model=push.model, signature=push.signature, key=key)


def verify_bytes(model: bytes, signature_doc: bytes | None, keys: Iterable[TrustedKey],
                 current: Signature | None = None, origin: str = "model") -> VerifiedModel:
    """Verify model bytes against signature-document bytes (``MODEL.sig`` contents).

    This fits the daemon's ``ModelSlot`` verifier hook ``verifier(data, signature,
    origin)``: pass ``push.signature.to_json()`` for a push, or the ``MODEL.sig`` bytes
    for a replaced file.

    Raises
    ------
    SignatureError
        ``malformed`` when ``signature_doc`` is None (an unsigned model while keys are
        trusted) or unparsable; otherwise as :func:`verify` and :func:`check_not_older`.
    """
    if signature_doc is None:
        raise SignatureError(
            "malformed",
            f"{origin} refused: it has no signature and --trusted-key is set; sign it with "
            "'sigmoid-train sign MODEL --key signing.key' (MODEL.sig beside it) or push it "
            "with 'sigmoid-train push'",
        )
    signature = parse_signature(bytes(signature_doc)[: MAX_HEADER_BYTES + 1], f"{origin} signature")
    key = verify(model, signature, keys)
    check_not_older(signature, current)
    return VerifiedModel(model=bytes(model), signature=signature, key=key)


def sig_path_for(model_path: str | Path) -> Path:
    """Where a model's signature lives: ``MODEL.sig`` beside ``MODEL``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + SIG_SUFFIX)


def verify_file(model_path: str | Path, sig_path: str | Path | None,
                keys: Iterable[TrustedKey], max_bytes: int = MAX_MODEL_BYTES,
                current: Signature | None = None) -> VerifiedModel:
    """Verify a model file against its signature file (``MODEL.sig`` when ``sig_path`` is None).

    ``current`` (the signature of the model in use) refuses an older model, as in
    :func:`verify_push`.

    Read the model once and verify those bytes, so a file replaced between the check and
    the load cannot slip through: load the model from ``VerifiedModel.model``.

    Raises
    ------
    SignatureError
        ``malformed`` if the signature file is missing or unreadable, ``too_large`` over
        ``max_bytes``, otherwise as :func:`verify`.
    """
    model_path = Path(model_path)
    sig_path = sig_path_for(model_path) if sig_path is None else Path(sig_path)
    try:
        sig_data = sig_path.read_bytes()[: MAX_HEADER_BYTES + 1]
    except OSError as exc:
        raise SignatureError(
            "malformed",
            f"model {model_path} has no readable signature {sig_path} ({exc.strerror}); "
            f"sign it with: sigmoid-train sign {model_path} --key signing.key",
        ) from None
    signature = parse_signature(sig_data, str(sig_path))
    try:
        size = model_path.stat().st_size
        if size > max_bytes:
            raise SignatureError(
                "too_large", f"model {model_path} is {size} bytes, over the limit of {max_bytes}")
        model = model_path.read_bytes()
    except OSError as exc:
        raise SignatureError("malformed", f"cannot read model {model_path}: {exc.strerror}") \
            from None
    key = verify(model, signature, keys)
    check_not_older(signature, current)
    return VerifiedModel(model=model, signature=signature, key=key)


def write_verified(verified: VerifiedModel, model_path: str | Path) -> Path:
    """Store a verified model as ``model_path`` with its signature beside it (``MODEL.sig``).

    Both files are written to temporary names in the same directory and renamed into
    place, signature first, so :func:`verify_file` accepts the pair after a restart (and
    :func:`check_not_older` still knows when it was signed). A crash between the two
    renames leaves a pair that :func:`verify_file` refuses with ``sha256_mismatch``
    rather than a wrong model.

    Returns
    -------
    Path
        The signature file's path.
    """
    model_path = Path(model_path)
    sig_path = sig_path_for(model_path)
    # Both staged before the first rename; the signature is renamed first.
    write_files(model_path.parent, {sig_path.name: verified.signature.to_json(),
                                    model_path.name: verified.model}, mode=0o644)
    return sig_path


def check_not_older(new: Signature, current: Signature | None) -> None:
    """Refuse a replayed older model: ``new`` must not be signed before ``current``.

    Anyone who can publish to the model topic can replay an old, validly signed push;
    comparing ``signed_at`` stops a downgrade to a model that was since replaced. To roll
    back on purpose, sign the old file again (it gets a new ``signed_at``).

    Parameters
    ----------
    new : Signature
        The candidate model's signature.
    current : Signature or None
        The signature of the model in use (None when it is unsigned: nothing to compare).

    Raises
    ------
    SignatureError
        ``reason="replay"`` when ``new`` was signed before ``current``.
    """
    if current is None or new.signed_at >= current.signed_at:
        return
    raise SignatureError(
        "replay",
        f"model {describe(new, short=True)} signed at {new.signed_at} refused: "
        f"it is older than the model in use (signed at {current.signed_at}); to roll back "
        "on purpose, sign the old model again and push it",
    )


def _show(text: str) -> str:
    # Signature fields come from the network: quote them and cut them short so a hostile
    # name cannot forge log lines.
    return repr(text[:80])


def describe(signature: Signature, short: bool = False) -> str:
    """One line for logs: file, name, version (and unless ``short``: hash, signer, time)."""
    head = (f"{_show(signature.file)} (name {_show(signature.name)}, "
            f"version {_show(signature.version)}")
    if short:
        return head + ")"
    return (f"{head}, sha256 {signature.sha256[:12]}, key {_show(signature.key_id)}, "
            f"signed_at {signature.signed_at})")
