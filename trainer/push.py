"""Publish a signed model to a daemon: ``sigmoid-train push``.

The push is one QoS 1 message on ``sigmoid-edge/{node}/model`` (format in
:mod:`edge.signing`), sent over MQTT 5 so that the broker's PUBACK says whether the
publish was authorised: mosquitto acknowledges an ACL-denied QoS 1 publish with
"Not authorized" under MQTT 5, where MQTT 3.1.1 would drop it silently.

The connection is the daemon's (:func:`edge.mqtt.connect_client`: URL, user/password,
TLS); this module adds the push-specific checks and hints.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from edge import credentials
from edge.config import NODE_NAME_RULE, ConfigError, check_node_name, parse_broker_url
from edge.mqtt import MqttError, connect_client
from edge.signing import (
    MAX_MODEL_BYTES,
    PUSH_TOPIC,
    Signature,
    SignatureError,
    encode_push,
    parse_signature,
)
from trainer.signing import load_private_key, sign_model

PASSWORD_ENV = credentials.PASSWORD_ENV


class PushError(RuntimeError):
    """The model could not be delivered to the broker (the message says why)."""


@dataclass(frozen=True)
class BrokerSettings:
    """How to reach a broker.

    Attributes
    ----------
    url : str
        ``mqtt://host[:1883]`` or ``mqtts://host[:8883]``, checked.
    tls : bool
        True for ``mqtts://``.
    username, password : str
        Credentials (empty for anonymous); the password never comes from the command line.
    tls_ca, tls_cert, tls_key : str
        CA bundle (system CAs when empty) and client certificate/key for mutual TLS.
    """

    url: str
    tls: bool
    username: str = ""
    password: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""


def read_password(password_file: str | None, environ=os.environ) -> str:
    """The broker password, as every command reads it (:func:`edge.credentials.read_password`)."""
    try:
        return credentials.read_password(password_file, environ)
    except credentials.PasswordFileError as exc:
        raise PushError(f"--password-file: {exc}") from None


def broker_settings(url: str, *, username: str | None = None, password: str | None = None,
                    tls_ca: str | None = None, tls_cert: str | None = None,
                    tls_key: str | None = None) -> BrokerSettings:
    """Check a broker URL, credentials and TLS files together."""
    try:
        address = parse_broker_url(url)
    except ConfigError as exc:
        raise PushError(str(exc)) from None
    if not address.tls and (tls_ca or tls_cert or tls_key):
        raise PushError(f"TLS options need an mqtts:// broker URL, got {url!r}")
    if bool(tls_cert) != bool(tls_key):
        raise PushError("--tls-cert and --tls-key go together (client certificate and its key)")
    for option, path in (("--tls-ca", tls_ca), ("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if path and not Path(path).is_file():
            raise PushError(f"{option} {path}: no such file")
    if password and not username:
        raise PushError(f"a password was given ({PASSWORD_ENV} or --password-file) "
                        "without --username")
    return BrokerSettings(
        url=address.url, tls=address.tls, username=username or "", password=password or "",
        tls_ca=tls_ca or "", tls_cert=tls_cert or "", tls_key=tls_key or "",
    )


def connect(settings: BrokerSettings, timeout: float = 10.0) -> mqtt.Client:
    """A connected MQTT 5 client with its network loop running.

    Raises
    ------
    PushError
        When the broker cannot be reached, the TLS handshake fails, or the broker refuses
        the connection; the message says what to check.
    """
    try:
        return connect_client(
            settings.url, timeout=timeout, keepalive=30, mqtt_version="5",
            username=settings.username, password=settings.password,
            tls_ca=settings.tls_ca, tls_cert=settings.tls_cert, tls_key=settings.tls_key,
        )
    except MqttError as exc:
        message = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in message:
        message += "; the broker's TLS certificate is not trusted: pass its CA with --tls-ca"
    elif "refused the connection" in message and settings.username:
        message += (f"; check --username {settings.username} and the password "
                    f"({PASSWORD_ENV} or --password-file)")
    elif "refused the connection" in message:
        message += f"; this broker may need --username and a password ({PASSWORD_ENV})"
    raise PushError(message)


def close(client: mqtt.Client) -> None:
    """Disconnect and stop the network loop of a client from :func:`connect`."""
    try:
        client.disconnect()
    finally:
        client.loop_stop()


def publish_confirmed(client: mqtt.Client, topic: str, payload: bytes, *, retain: bool = False,
                      timeout: float = 30.0) -> None:
    """Publish at QoS 1 and wait for the broker's PUBACK, failing on a refusal.

    Raises
    ------
    PushError
        When no PUBACK arrives in time or the PUBACK carries a failure reason code.
    """
    # PUBACKs are recorded by mid: one can arrive before publish() has returned its mid.
    acks: dict = {}
    cond = threading.Condition()

    def on_publish(client, userdata, mid, reason_code, properties):
        with cond:
            acks[mid] = reason_code
            cond.notify_all()

    def on_disconnect(client, userdata, flags, reason_code, properties):
        with cond:
            acks["disconnected"] = reason_code
            cond.notify_all()

    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    info = client.publish(topic, payload, qos=1, retain=retain)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        raise PushError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
    with cond:
        if not cond.wait_for(lambda: info.mid in acks or "disconnected" in acks, timeout):
            raise PushError(f"the broker did not acknowledge the model on {topic} within "
                            f"{timeout:g} s")
        if info.mid not in acks:
            raise PushError(f"the broker closed the connection before acknowledging the model "
                            f"on {topic}: {acks['disconnected']}")
        rc = acks[info.mid]
    if rc.is_failure:
        raise PushError(f"the broker refused the model on {topic}: {rc} "
                        "(is this user allowed to publish there? check the broker's ACL)")


def push_model(model_path: str | Path, key_path: str | Path | None, node: str,
               settings: BrokerSettings, *, sig_path: str | Path | None = None,
               retain: bool = False, timeout: float = 30.0) -> Signature:
    """Sign a model and publish it to ``sigmoid-edge/{node}/model``; return its signature.

    Parameters
    ----------
    model_path : str or Path
        The model file.
    key_path : str or Path or None
        The signing key; the model is signed now (a fresh ``signed_at``).
    node : str
        The daemon's node name.
    settings : BrokerSettings
        From :func:`broker_settings`.
    sig_path : str or Path, optional
        Instead of ``key_path``: an existing ``MODEL.sig`` (signed on another machine, so
        the key never touches this one). It must describe exactly this model.
    retain, timeout
        Retain the message; seconds to wait for the PUBACK.

    Raises
    ------
    PushError
        See :func:`connect` and :func:`publish_confirmed`.
    SignatureError
        If the signing key cannot be used, or ``sig_path`` does not match the model.
    """
    check_node(node)
    payload, signature = prepare_push(model_path, key_path, sig_path)
    client = connect(settings, timeout=min(timeout, 10.0))
    try:
        publish_confirmed(client, PUSH_TOPIC.format(node=node), payload, retain=retain,
                          timeout=timeout)
    finally:
        close(client)
    return signature


def check_node(node: str) -> None:
    """Raise :class:`PushError` unless ``node`` is one topic level a daemon could have."""
    if not check_node_name(node):
        raise PushError(f"--node {NODE_NAME_RULE}, got {node!r}")


def prepare_push(model_path: str | Path, key_path: str | Path | None,
                 sig_path: str | Path | None = None) -> tuple[bytes, Signature]:
    """Read and sign a model (or check its ``MODEL.sig``): the push message and signature.

    One message serves any number of nodes (``sigmoid-train fleet push`` signs once).

    Raises
    ------
    PushError
        Neither or both of ``key_path`` and ``sig_path``; the model is unreadable or larger
        than a daemon accepts.
    SignatureError
        If the signing key cannot be used, or ``sig_path`` does not match the model.
    """
    if (key_path is None) == (sig_path is None):
        raise PushError("give either --key (sign now) or --sig (an existing MODEL.sig)")
    model_path = Path(model_path)
    try:
        size = model_path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise PushError(f"{model_path} is {size} bytes; a daemon accepts pushes of at most "
                            f"{MAX_MODEL_BYTES} bytes")
        model = model_path.read_bytes()
    except OSError as exc:
        raise PushError(f"cannot read model {model_path}: {exc.strerror}") from None
    if key_path is not None:
        signature = sign_model(model, load_private_key(key_path), model_path.name)
    else:
        signature = _matching_signature(model, model_path, Path(sig_path))
    payload = encode_push(model, signature)
    if len(payload) > MAX_MODEL_BYTES:
        raise PushError(f"the push message is {len(payload)} bytes; a daemon accepts at most "
                        f"{MAX_MODEL_BYTES} bytes")
    return payload, signature


def _matching_signature(model: bytes, model_path: Path, sig_path: Path) -> Signature:
    """Read ``sig_path`` and check it is for these exact bytes (no key needed for that)."""
    try:
        data = sig_path.read_bytes()
    except OSError as exc:
        raise PushError(f"cannot read signature {sig_path}: {exc.strerror}") from None
    signature = parse_signature(data, str(sig_path))
    actual = hashlib.sha256(model).hexdigest()
    if actual != signature.sha256 or len(model) != signature.size:
        raise SignatureError(
            "sha256_mismatch",
            f"{sig_path} is not a signature of {model_path} (sha256 {actual[:16]}... vs signed "
            f"{signature.sha256[:16]}...); sign this file again",
        )
    return signature
