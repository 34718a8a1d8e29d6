"""The MQTT side: build paho clients from a URL, and the daemon's link to the broker.

Two layers:

- :func:`build_client` / :func:`connect_client`: a paho 2.x client (``CallbackAPIVersion.
  VERSION2``, MQTT 5 or 3.1.1, TLS, username/password, TCP_NODELAY) from a broker URL.
  ``connect_client`` returns it connected, with its network loop running, or raises
  :class:`MqttError` with a clear message. Anything that needs to talk to the broker once
  (``sigmoid-train push``, ``simulate``) uses these.
- :class:`MqttLink`: what the daemon keeps open, after Frigate's communicator and
  mqtt-io: wanted subscriptions are *state*, (re)made in the connect callback after every
  (re)connect; the last will is a retained ``offline`` on the status topic and ``online``
  is published only once the broker has accepted the connection.

paho's errors are wrapped in :class:`MqttError`; callers never see paho's error codes.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge.config import BrokerAddress, parse_broker_url

log = logging.getLogger(__name__)

Handler = Callable[[mqtt.MQTTMessage], None]

# What to tell a user for the CONNACK refusals they can act on.
_HINTS = {
    "Bad user name or password": "check --username and SIGMOID_EDGE_PASSWORD/--password-file",
    "Not authorized": "check --username, the password (SIGMOID_EDGE_PASSWORD or "
                      "--password-file) and the broker's ACL",
    "Client identifier not valid": "choose another --client-id",
    "Unsupported protocol version": "try --mqtt-version 3.1.1",
    "Server unavailable": "the broker is not ready; try again later",
}


class MqttError(RuntimeError):
    """The broker could not be reached, refused us, or a publish failed."""


@dataclass(frozen=True)
class Will:
    """A last-will message the broker publishes when the connection drops uncleanly."""

    topic: str
    payload: str | bytes
    qos: int = 1
    retain: bool = True


def build_client(
    broker: str | BrokerAddress,
    *,
    client_id: str = "",
    username: str = "",
    password: str = "",
    tls_ca: str = "",
    tls_cert: str = "",
    tls_key: str = "",
    mqtt_version: str = "5",
    will: Will | None = None,
) -> tuple[mqtt.Client, BrokerAddress]:
    """Build (but do not connect) a paho client for ``broker``.

    Parameters
    ----------
    broker : str or BrokerAddress
        ``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]`` (TLS).
    client_id : str
        Empty lets the broker or paho choose.
    username, password : str
        Credentials; empty for anonymous.
    tls_ca, tls_cert, tls_key : str
        CA bundle (system CAs when empty) and an optional client certificate and key.
    mqtt_version : {"5", "3.1.1"}
    will : Will, optional

    Returns
    -------
    client, address
    """
    address = parse_broker_url(broker) if isinstance(broker, str) else broker
    protocol = mqtt.MQTTv5 if str(mqtt_version) == "5" else mqtt.MQTTv311
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    # A bug in one of our handlers must never kill paho's network thread.
    client.suppress_exceptions = True
    client.on_socket_open = _no_delay
    if username:
        client.username_pw_set(username, password or None)
    if address.tls:
        try:
            client.tls_set(ca_certs=tls_ca or None, certfile=tls_cert or None,
                           keyfile=tls_key or None)
        except (OSError, ValueError) as e:
            raise MqttError(f"cannot set up TLS for {address.url}: {e}") from None
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    return client, address


def _no_delay(client, userdata, sock) -> None:
    # Without TCP_NODELAY, Nagle + delayed ACKs can stall each small publish by ~40 ms.
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


def explain(reason_code) -> str:
    """A CONNACK refusal (paho ReasonCode) as a sentence with a hint."""
    name = str(reason_code)
    hint = _HINTS.get(name)
    return f"broker refused the connection: {name}" + (f" ({hint})" if hint else "")


def connect_client(broker: str | BrokerAddress, *, timeout: float = 10.0, keepalive: int = 60,
                   **kwargs) -> mqtt.Client:
    """A connected client with its network loop running (for one-off tools).

    Takes the keyword arguments of :func:`build_client`. Call ``client.loop_stop()`` and
    ``client.disconnect()`` when done.

    Raises
    ------
    MqttError
        If the broker cannot be reached within ``timeout`` or refuses the connection.
    """
    client, address = build_client(broker, **kwargs)
    result: dict = {}
    done = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        done.set()

    client.on_connect = on_connect
    _connect(client, address, keepalive)
    client.loop_start()
    if not done.wait(timeout):
        client.loop_stop()
        raise MqttError(f"no answer from the broker at {address.url} within {timeout:g} s")
    if result["rc"].is_failure:
        client.loop_stop()
        client.disconnect()
        raise MqttError(explain(result["rc"]))
    return client


def _connect(client: mqtt.Client, address: BrokerAddress, keepalive: int) -> None:
    try:
        client.connect(address.host, address.port, keepalive=keepalive)
    except (OSError, ValueError) as e:  # refused, unreachable, DNS, TLS handshake
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise MqttError(f"cannot connect to the broker at {address.url}: {reason}") from None


def client_from_config(cfg, will: Will | None = None) -> tuple[mqtt.Client, BrokerAddress]:
    """:func:`build_client` with the connection settings of an :class:`edge.config.Config`."""
    return build_client(
        cfg.broker, client_id=cfg.client_id, username=cfg.username, password=cfg.password,
        tls_ca=cfg.tls_ca, tls_cert=cfg.tls_cert, tls_key=cfg.tls_key,
        mqtt_version=cfg.mqtt_version, will=will,
    )


class MqttLink:
    """The daemon's connection: subscriptions as state, availability, publishing.

    Parameters
    ----------
    client : paho.mqtt.client.Client
        From :func:`build_client`, with the will already set.
    address : BrokerAddress
    status_topic : str, optional
        Where ``online`` is published (retained) once the broker accepts us; the will
        should publish ``offline`` there.
    keepalive : int
        Seconds.

    Notes
    -----
    Handlers run on paho's network thread and must be fast: parse and enqueue, nothing
    slow. :meth:`subscribe` with ``default=True`` makes the handler paho's ``on_message``
    (the hot path skips paho's per-topic callback lookup when it is the only handler);
    others are filtered callbacks.
    """

    def __init__(self, client: mqtt.Client, address: BrokerAddress, *,
                 status_topic: str | None = None, keepalive: int = 60):
        self.client = client
        self.address = address
        self.status_topic = status_topic
        self.keepalive = keepalive
        self.subscriptions: dict[str, int] = {}
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.refused: str | None = None
        self._pending_subs: set[int] = set()
        self._stopping = False
        self._outage_logged = False
        self._starting = False
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe

    @classmethod
    def from_config(cls, cfg) -> MqttLink:
        """A link for a validated :class:`edge.config.Config`, will set on its status topic."""
        will = Will(cfg.status_topic, "offline", qos=1, retain=True)
        client, address = client_from_config(cfg, will=will)
        return cls(client, address, status_topic=cfg.status_topic, keepalive=cfg.keepalive)

    def subscribe(self, topic_filter: str, qos: int, handler: Handler,
                  default: bool = False) -> None:
        """Want ``topic_filter`` at ``qos``, delivering messages to ``handler(msg)``.

        Kept as state: made now if connected, and again after every reconnect.
        """
        guarded = _guard(handler)
        if default:
            self.client.on_message = guarded
        else:
            self.client.message_callback_add(topic_filter, guarded)
        self.subscriptions[topic_filter] = qos
        if self.connected.is_set():
            self.client.subscribe(topic_filter, qos)

    def start(self, timeout: float = 10.0) -> None:
        """Connect, start the network thread and wait for the broker to accept us.

        Raises
        ------
        MqttError
            If the broker is unreachable, refuses us, or does not answer within ``timeout``.
        """
        self._starting = True
        try:
            _connect(self.client, self.address, self.keepalive)
            self.client.loop_start()
            deadline = time.monotonic() + timeout
            while not self.connected.wait(0.05):
                if self.refused is not None or time.monotonic() > deadline:
                    self.client.loop_stop()
                    raise MqttError(self.refused or f"no answer from the broker at "
                                                     f"{self.address.url} within {timeout:g} s")
        finally:
            self._starting = False

    def publish(self, topic: str, payload: str | bytes, qos: int = 1,
                retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish (thread-safe, non-blocking); while disconnected, QoS > 0 is queued by paho."""
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def stop(self, timeout: float = 3.0) -> None:
        """Publish ``offline`` (retained), then disconnect cleanly within ``timeout``."""
        self._stopping = True
        if self.status_topic and self.connected.is_set():
            info = self.client.publish(self.status_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    # paho callbacks (network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            # Never mark ourselves connected when the broker said no (Frigate's mistake).
            self.refused = explain(reason_code)
            if not self._starting:  # during start() the caller raises it as MqttError
                log.error("%s", self.refused)
            return
        self.refused = None
        if self._outage_logged:
            log.warning("reconnected to %s", self.address.url)
        self._outage_logged = False
        if self.subscriptions:
            result, mid = client.subscribe(list(self.subscriptions.items()))
            if result == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._pending_subs.add(mid)
        if self.status_topic:
            # The broker handles our packets in order, so `online` follows the subscription.
            client.publish(self.status_topic, "online", qos=1, retain=True)
        log.info("connected to %s, subscribed to %s", self.address.url,
                 ", ".join(self.subscriptions) or "nothing")
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("broker refused a subscription: %s (check the broker's ACL)", failed)
        self._pending_subs.discard(mid)
        if not self._pending_subs:
            self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self._stopping and not self._outage_logged:
            # One line per outage, not one per retry.
            log.warning("lost the connection to %s (%s); reconnecting", self.address.url,
                        reason_code)
            self._outage_logged = True


def _guard(handler: Handler):
    """Wrap a handler so an exception is logged (rate-limited) instead of propagating."""
    last = [0.0]

    def on_message(client, userdata, msg):
        try:
            handler(msg)
        except Exception:
            now = time.monotonic()
            if now - last[0] > 10.0:
                last[0] = now
                log.exception("error while handling a message on %r", msg.topic)

    return on_message
