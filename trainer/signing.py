"""Signing models on the workstation: Ed25519 keys and ``MODEL.sig`` files.

The formats live on the edge side (:mod:`edge.signing`), which checks what this module
makes. Keys are Ed25519 (``cryptography``): ``signing.key`` is the PKCS#8 PEM private key,
readable by its owner only; ``signing.pub`` is the PEM public key a daemon trusts with
``--trusted-key``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.signing import Signature, SignatureError, key_id, sig_path_for

log = logging.getLogger(__name__)

PRIVATE_KEY_NAME = "signing.key"
PUBLIC_KEY_NAME = "signing.pub"


@dataclass(frozen=True)
class KeyPair:
    """Where :func:`keygen` wrote a key pair, and the key's id."""

    private_path: Path
    public_path: Path
    key_id: str


def _raw_public(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def keygen(out_dir: str | Path, force: bool = False) -> KeyPair:
    """Write a new Ed25519 key pair: ``out_dir/signing.key`` (mode 0600) and ``signing.pub``.

    Parameters
    ----------
    out_dir : str or Path
        Directory for the two files; created (mode 0700) if missing.
    force : bool
        Replace existing key files. Without it an existing key is never overwritten: losing
        it means re-keying every daemon.

    Raises
    ------
    FileExistsError
        If a key file exists and ``force`` is False.
    """
    out_dir = Path(out_dir)
    private_path, public_path = out_dir / PRIVATE_KEY_NAME, out_dir / PUBLIC_KEY_NAME
    existing = [p for p in (private_path, public_path) if p.exists()]
    if existing and not force:
        raise FileExistsError(
            f"{existing[0]} already exists; keep it, or pass --force to replace it "
            "(every daemon that trusts the old signing.pub must then get the new one)"
        )
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Created 0600 from the start (O_EXCL after unlinking), so the key is never readable
    # by others, not even for a moment, whatever the umask.
    private_path.unlink(missing_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    os.chmod(private_path, 0o600)
    public_path.unlink(missing_ok=True)
    public_path.write_bytes(public_pem)
    os.chmod(public_path, 0o644)
    return KeyPair(private_path, public_path, key_id(_raw_public(key.public_key())))


def load_private_key(path: str | Path) -> ed25519.Ed25519PrivateKey:
    """Load an Ed25519 private key written by :func:`keygen`.

    Raises
    ------
    SignatureError
        ``reason="bad_key"`` if the file cannot be read or is not an Ed25519 private key.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise SignatureError("bad_key", f"cannot read signing key {path}: {exc.strerror}") \
            from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("signing key %s is readable by other users; run: chmod 600 %s", path, path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(
            "bad_key",
            f"{path} is not an unencrypted PEM private key ({exc}); "
            "make one with 'sigmoid-train keygen --out DIR'",
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(
            "bad_key", f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def model_identity(model: bytes) -> tuple[str, str]:
    """The ``name`` and ``version`` metadata of an ONNX model, or ("", "") if it has none."""
    try:
        import onnx

        props = {p.key: p.value for p in onnx.load_model_from_string(model).metadata_props}
    except Exception as exc:  # noqa: BLE001 - any unreadable model just has no identity
        log.warning("could not read name/version from the model (%s); signing it anyway",
                    type(exc).__name__)
        return "", ""
    return props.get("name", ""), props.get("version", "")


def sign_model(model: bytes, key: ed25519.Ed25519PrivateKey, file: str, *,
               name: str | None = None, version: str | None = None,
               signed_at: int | None = None) -> Signature:
    """Sign a model's bytes.

    Parameters
    ----------
    model : bytes
        The model file's bytes.
    key : Ed25519PrivateKey
        From :func:`load_private_key`.
    file : str
        The model's file name (for logs on the edge).
    name, version : str, optional
        Model identity; read from the ONNX metadata when omitted.
    signed_at : int, optional
        Unix seconds; now when omitted. The edge refuses a model signed before the one it
        runs, so re-signing is how to roll back on purpose.

    Returns
    -------
    Signature
    """
    if name is None or version is None:
        meta_name, meta_version = model_identity(model)
        name = meta_name if name is None else name
        version = meta_version if version is None else version
    unsigned = Signature(
        sha256=hashlib.sha256(model).hexdigest(),
        size=len(model),
        file=Path(file).name,
        name=name,
        version=version,
        signed_at=int(time.time()) if signed_at is None else int(signed_at),
        key_id=key_id(_raw_public(key.public_key())),
        signature=b"",
    )
    return Signature(**{**unsigned.statement(), "signature": key.sign(unsigned.signed_bytes())})


def sign_file(model_path: str | Path, key_path: str | Path,
              out: str | Path | None = None) -> tuple[Path, Signature]:
    """Sign a model file and write its signature to ``out`` (``MODEL.sig`` by default)."""
    model_path = Path(model_path)
    key = load_private_key(key_path)
    signature = sign_model(model_path.read_bytes(), key, model_path.name)
    out = sig_path_for(model_path) if out is None else Path(out)
    out.write_bytes(signature.to_json())
    return out, signature
