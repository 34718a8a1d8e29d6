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
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import BrokerAddress, parse_broker_url
from edge.paho_fast import FastClient

log = logging.getLogger(__name__)

Handler = Callable[[mqtt.MQTTMessage], None]

# What to tell a user for the CONNACK refusals they can act on.
_HINTS = {
    "Bad user name or password": "check --username and SIGMOID_EDGE_PASSWORD/--password-file",
    # mosquitto 2.0 answers a wrong password under MQTT 5 with "Not authorized" (135), the
    # same code as an ACL refusal, so the hint must name both causes.
    "Not authorized": "wrong user name or password (check --username and "
                      "SIGMOID_EDGE_PASSWORD/--password-file), or the broker does not allow "
                      "this user/client id (check its password file and ACL)",
    "Client identifier not valid": "choose another --client-id",
    "Unsupported protocol version": "try --mqtt-version 3.1.1",
    "Server unavailable": "the broker is not ready; try again later",
}
# Refusals that retrying soon cannot fix: retry slowly (``auth_retry``), not in a storm.
_CREDENTIAL_REFUSALS = {"Bad user name or password", "Not authorized", "Banned",
                        "Client identifier not valid", "Bad authentication method"}
# Headroom over the largest payload we accept, for the topic and MQTT 5 properties.
PACKET_HEADROOM = 64 * 1024
# Room in paho's outgoing queue above max_pending_outputs for the daemon's own messages.
OWN_HEADROOM = 1000


class Backoff:
    """Reconnect delays: exponential from ``minimum`` to ``maximum``, with jitter.

    Each delay is drawn uniformly from ``[d/2, d]`` where ``d`` doubles after every failed
    attempt ("equal jitter"), so a fleet of daemons that lost the same broker does not
    reconnect in lock step. :meth:`reset` after a successful connection.

    Parameters
    ----------
    minimum, maximum : float
        Seconds.
    rng : random.Random, optional
        For reproducible tests.
    """

    def __init__(self, minimum: float = 1.0, maximum: float = 60.0,
                 rng: random.Random | None = None):
        if not 0 < minimum <= maximum:
            raise ValueError(f"need 0 < minimum <= maximum, got {minimum}, {maximum}")
        self.minimum = minimum
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next attempt (and count the attempt)."""
        d = min(self.maximum, self.minimum * 2.0 ** min(self.attempt, 60))
        self.attempt += 1
        return self._rng.uniform(d / 2, d)

    def reset(self) -> None:
        self.attempt = 0


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
    persistent: bool = False,
    manual_ack: bool = False,
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
    persistent : bool
        Keep the session (subscriptions, queued QoS > 0 messages) on the broker across
        disconnects: clean session off for 3.1.1; for MQTT 5 pass ``clean_start=False``
        and a session expiry to ``connect`` (:class:`MqttLink` does).
    manual_ack : bool
        Acknowledge QoS > 0 messages only when ``client.ack(mid, qos)`` is called.

    Returns
    -------
    client, address
    """
    address = parse_broker_url(broker) if isinstance(broker, str) else broker
    protocol = mqtt.MQTTv5 if str(mqtt_version) == "5" else mqtt.MQTTv311
    kwargs = {"clean_session": False} if persistent and protocol == mqtt.MQTTv311 else {}
    client = FastClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                     manual_ack=manual_ack, **kwargs)
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


def _connect(client: mqtt.Client, address: BrokerAddress, keepalive: int,
             **kwargs) -> None:
    try:
        client.connect(address.host, address.port, keepalive=keepalive, **kwargs)
    except (OSError, ValueError) as e:  # refused, unreachable, DNS, TLS handshake
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise MqttError(f"cannot connect to the broker at {address.url}: {reason}") from None


def client_from_config(cfg, will: Will | None = None) -> tuple[mqtt.Client, BrokerAddress]:
    """:func:`build_client` with the connection settings of an :class:`edge.config.Config`."""
    return build_client(
        cfg.broker, client_id=cfg.client_id, username=cfg.username, password=cfg.password,
        tls_ca=cfg.tls_ca, tls_cert=cfg.tls_cert, tls_key=cfg.tls_key,
        mqtt_version=cfg.mqtt_version, will=will, persistent=cfg.persistent_session,
        manual_ack=cfg.persistent_session,
    )


class MqttLink:
    """The daemon's connection: subscriptions as state, availability, reconnects, publishing.

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
    backoff : Backoff, optional
        Delays between reconnect attempts (exponential with jitter; 1 s to 60 s).
    auth_retry : float
        Seconds to wait after the broker refused our credentials or client id: retrying
        sooner cannot help and would only flood the broker's log.
    session_expiry : int, optional
        Keep a persistent session: MQTT 5 ``clean_start=False`` with this Session Expiry
        Interval (seconds); for 3.1.1 the client must be built with ``persistent=True``.
    max_packet : int, optional
        MQTT 5 Maximum Packet Size: the broker drops larger messages instead of sending
        them, so a huge publish cannot exhaust our memory.

    Notes
    -----
    Handlers run on paho's network thread and must be fast: parse and enqueue, nothing
    slow. :meth:`subscribe` with ``default=True`` makes the handler paho's ``on_message``
    (the hot path skips paho's per-topic callback lookup when it is the only handler);
    others are filtered callbacks.

    Reconnecting is paho's network thread's job; we replace its wait between attempts
    (:class:`Backoff`) and log one line when an outage starts and one when it ends, never
    one per attempt.
    """

    def __init__(self, client: mqtt.Client, address: BrokerAddress, *,
                 status_topic: str | None = None, keepalive: int = 60,
                 backoff: Backoff | None = None, auth_retry: float = 60.0,
                 session_expiry: int | None = None, max_packet: int | None = None):
        self.client = client
        self.address = address
        self.status_topic = status_topic
        self.keepalive = keepalive
        self.backoff = backoff or Backoff()
        self.auth_retry = auth_retry
        self.session_expiry = session_expiry
        self.max_packet = max_packet
        self.subscriptions: dict[str, int] = {}
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.refused: str | None = None
        self.session_present = False
        # Counters for the stats topic (written on the network thread only).
        self.connects = 0
        self.outages = 0
        self.attempts = 0
        self.publish_refused = 0
        # Called on the network thread after every accepted (re)connect, after `online`
        # (e.g. to publish the retained info again: a broker may have lost it).
        self.on_connected: list[Callable[[], None]] = []
        self._pending_subs: set[int] = set()
        self._stopping = False
        self._stop = threading.Event()
        self._outage_logged = False
        self._refusal_logged: str | None = None
        self._slow_retry = False
        self._publish_log = 0.0
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = self._on_connect_fail
        if client.protocol == mqtt.MQTTv5:
            client.on_publish = self._on_publish
        if isinstance(client, FastClient):
            client.wait_policy = self._wait

    @classmethod
    def from_config(cls, cfg) -> MqttLink:
        """A link for a validated :class:`edge.config.Config`, will set on its status topic."""
        will = Will(cfg.status_topic, "offline", qos=1, retain=True)
        client, address = client_from_config(cfg, will=will)
        largest = 2 * cfg.max_payload_bytes
        if cfg.trusted_keys:
            from edge.signing import MAX_MODEL_BYTES

            largest = max(largest, MAX_MODEL_BYTES)
        # A hard cap for everything we publish; the runner stops at max_pending_outputs, so
        # status, stats and errors keep room.
        client.max_queued_messages_set(cfg.max_pending_outputs + OWN_HEADROOM)
        return cls(client, address, status_topic=cfg.status_topic, keepalive=cfg.keepalive,
                   backoff=Backoff(cfg.reconnect_min, cfg.reconnect_max),
                   auth_retry=cfg.auth_retry,
                   session_expiry=cfg.session_expiry if cfg.persistent_session else None,
                   max_packet=largest + PACKET_HEADROOM)

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

    def _connect_args(self) -> dict:
        if self.client.protocol != mqtt.MQTTv5:
            return {}
        props = Properties(PacketTypes.CONNECT)
        if self.max_packet:
            props.MaximumPacketSize = min(self.max_packet, 268435455)
        args = {"properties": props}
        if self.session_expiry is not None:
            props.SessionExpiryInterval = min(int(self.session_expiry), 0xFFFFFFFF)
            args["clean_start"] = False
        else:
            args["clean_start"] = True
        return args

    def start(self, timeout: float = 10.0) -> None:
        """Connect, start the network thread and wait for the broker to accept us.

        Raises
        ------
        MqttError
            If the broker is unreachable, refuses us, or does not answer within ``timeout``.
        """
        _connect(self.client, self.address, self.keepalive, **self._connect_args())
        self.client.loop_start()
        deadline = time.monotonic() + timeout
        while not self.connected.wait(0.05):
            if self.refused is not None or time.monotonic() > deadline:
                self._stop.set()
                self.client.loop_stop()
                raise MqttError(self.refused or f"no answer from the broker at "
                                                 f"{self.address.url} within {timeout:g} s")

    def publish(self, topic: str, payload: str | bytes, qos: int = 1,
                retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish (thread-safe, non-blocking); while disconnected, QoS > 0 is queued by paho."""
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def publish_many(self, messages: list[tuple[str, str | bytes]], qos: int = 1) -> int:
        """Publish many ``(topic, payload)`` at once (thread-safe, non-blocking, not retained).

        Cheaper than :meth:`publish` each (see :meth:`edge.paho_fast.FastClient.
        publish_many`); nothing to wait on. Returns how many the full queue refused.
        """
        client = self.client
        if isinstance(client, FastClient):
            return client.publish_many(messages, qos)
        return sum(client.publish(topic, payload, qos=qos).rc == mqtt.MQTT_ERR_QUEUE_SIZE
                   for topic, payload in messages)

    def pending(self) -> int:
        """QoS > 0 messages published and not yet acknowledged (in flight or queued by paho)."""
        return len(self.client._out_messages)  # paho's own count for max_queued_messages

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a received QoS > 0 message (manual-ack clients; thread-safe)."""
        self.client.ack(mid, qos)

    def stop(self, timeout: float = 3.0) -> None:
        """Publish ``offline`` (retained), then disconnect cleanly within ``timeout``."""
        self._stopping = True
        self._stop.set()
        if self.status_topic and self.connected.is_set():
            info = self.client.publish(self.status_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    # paho's network thread
    def _wait(self) -> None:
        """Between reconnect attempts: backoff with jitter, or slowly after a refusal."""
        delay = self.backoff.next()
        if self._slow_retry:
            delay = max(delay, self.auth_retry * random.uniform(0.9, 1.1))
        self.attempts += 1
        log.debug("reconnecting to %s in %.2f s", self.address.url, delay)
        self._stop.wait(delay)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            # Never mark ourselves connected when the broker said no (Frigate's mistake).
            self.refused = explain(reason_code)
            self._slow_retry = str(reason_code) in _CREDENTIAL_REFUSALS
            # At start, start() raises the refusal; later, log it once per outage and reason.
            if self.connects and self._refusal_logged != self.refused:
                self._refusal_logged = self.refused
                retry = f"; retrying every {self.auth_retry:g} s" if self._slow_retry else ""
                log.error("%s%s", self.refused, retry)
            return
        self.refused = None
        self._refusal_logged = None
        self._slow_retry = False
        self.backoff.reset()
        self.connects += 1
        self.session_present = bool(flags.session_present)
        if self._outage_logged:
            log.warning("reconnected to %s (session %s)", self.address.url,
                        "resumed" if self.session_present else "new")
        self._outage_logged = False
        if self.subscriptions:
            result, mid = client.subscribe(list(self.subscriptions.items()))
            if result == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._pending_subs.add(mid)
        if self.status_topic:
            # The broker handles our packets in order, so `online` follows the subscription.
            client.publish(self.status_topic, "online", qos=1, retain=True)
        for hook in self.on_connected:
            try:
                hook()
            except Exception:  # a hook must not keep us from marking the link connected
                log.exception("on_connected hook failed")
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

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if not reason_code.is_failure:
            return
        # MQTT 5 PUBACK with a reason: mosquitto says "Not authorized" when its ACL denies
        # the topic. Count every one; log at most one line a minute.
        self.publish_refused += 1
        now = time.monotonic()
        if now - self._publish_log > 60.0:
            self._publish_log = now
            hint = (" (the broker's ACL does not let this user write that topic: allow "
                    "the output topic and sigmoid-edge/<node>/#)"
                    if str(reason_code) == "Not authorized" else "")
            log.error("broker refused a publish: %s%s; %d refused so far", reason_code, hint,
                      self.publish_refused)

    def _outage(self, why) -> None:
        if not self._stopping and not self._outage_logged:
            # One line per outage, not one per retry.
            log.warning("lost the connection to %s (%s); reconnecting with backoff",
                        self.address.url, why)
            self._outage_logged = True
            self.outages += 1

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if self.refused is None:
            self._outage(reason_code)

    def _on_connect_fail(self, client, userdata) -> None:
        self._outage("cannot connect")


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
