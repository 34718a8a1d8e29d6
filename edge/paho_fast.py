"""paho's client with a cheaper receive path: the one place that touches paho's internals.

:class:`FastClient` overrides private methods of ``paho.mqtt.client.Client`` (2.x) and
reads private attributes. Everything it relies on is listed in :data:`PAHO_INTERNALS`
and checked by ``tests/test_paho_fast.py`` against the installed paho, so a paho release
that renames or reshapes one fails that test loudly instead of slowing or breaking the
daemon quietly; the same test feeds identical bytes to this client and to stock paho and
compares what each hands to ``on_message`` and writes back, and its behaviour against a
real broker is checked by ``tests/test_mqtt_client.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.client import _encode_payload
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

# Bytes asked of the socket per recv (see FastClient): hundreds of small sensor messages;
# for the rest of a large packet (a model push) up to RECV_MAX at a time.
RECV_CHUNK = 64 * 1024
RECV_MAX = 4 * 1024 * 1024
# With skip_topic set: a small read that held nothing but skipped messages waits this long
# before paho's loop selects again, so that the next read finds many messages instead of
# one or two (a wake-up of paho's loop costs about as much as 15 skipped messages). What
# arrives meanwhile, a message of this daemon's too, waits at most this long.
SKIP_LINGER_S = 0.001
SKIP_LINGER_BYTES = 4096
SKIP_ROUNDS = 10  # lingers in a row before paho's loop runs again (keepalive, select)
# Bytes of queued packets joined into one send (see FastClient._packet_write).
WRITE_CHUNK = 64 * 1024

# What FastClient relies on in paho.mqtt.client.Client: the methods it overrides or calls,
# with their parameters (self excluded); the paho method that calls each override (if
# paho stops calling it there, the override silently stops working); the instance
# attributes it reads or sets; the keys of ``_in_packet`` (FastClient fills it in to hand a
# packet to paho's own handlers, so they must be exactly these); and the instance
# attributes of a ``Properties`` (an empty one is copied from a template by its __dict__).
PAHO_INTERNALS = {
    "methods": {
        "_sock_recv": ["bufsize"],
        "_handle_pubackcomp": ["cmd"],
        "loop_read": ["max_packets"],
        "loop_write": [],
        "_reconnect_wait": [],
        "_do_on_publish": ["mid", "reason_code", "properties"],
        "_packet_handle": [],
        "_handle_on_message": ["message"],
        "_loop_rc_handle": ["rc"],
        "_easy_log": ["level", "fmt", "args"],
        "_send_puback": ["mid"],
        "_packet_queue": ["command", "packet", "mid", "qos", "info"],
        "_packet_write": [],
        "_send_publish": ["mid", "topic", "payload", "qos", "retain", "dup", "info",
                          "properties"],
        "_mid_generate": [],
        "_update_inflight": [],
        "_raise_for_invalid_topic": ["topic"],
        "message_callback_add": ["sub", "callback"],
        "message_callback_remove": ["sub"],
    },
    "called_from": {
        "_handle_pubackcomp": "_packet_handle",
        "_reconnect_wait": "loop_forever",
        "loop_read": "_loop",
        "_send_publish": "_update_inflight",
        "_packet_queue": "_send_publish",
        "_packet_write": "loop_write",
    },
    "attributes": ["_sock", "_in_packet", "_protocol", "_out_message_mutex", "_out_messages",
                   "_out_packet", "_manual_ack", "_msgtime_mutex", "_last_bytes_received",
                   "_on_message", "_on_message_filtered", "_userdata", "_callback_mutex",
                   "_in_callback_mutex", "suppress_exceptions", "_thread", "_sockpairW",
                   "_on_socket_register_write", "_callback_api_version", "_last_msg_out",
                   "_max_queued_messages", "_max_inflight_messages", "_inflight_messages",
                   "_logger", "on_log", "_mid_generate_mutex", "_last_mid"],
    # The keys of a queued outgoing packet (FastClient queues and writes them itself).
    "out_packet_keys": ["command", "mid", "qos", "pos", "to_process", "packet", "info"],
    "in_packet_keys": ["command", "have_remaining", "remaining_count", "remaining_mult",
                       "remaining_length", "packet", "to_process", "pos"],
    "properties_attributes": ["packetType", "types", "names", "properties"],
    # The slots FastClient fills in for a received message (see _message).
    "message_slots": ["_topic", "dup", "info", "mid", "payload", "properties", "qos", "retain",
                      "state", "timestamp"],
    "message_info_slots": ["_condition", "_iterpos", "_published", "mid", "rc"],
}

_PUBLISH = 0x30
_PUBACK = 0x40
_DISCONNECT = 0xE0
_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS
_PROTOCOL = MQTTErrorCode.MQTT_ERR_PROTOCOL
_CONN_LOST = MQTTErrorCode.MQTT_ERR_CONN_LOST
_AGAIN = MQTTErrorCode.MQTT_ERR_AGAIN
_NO_CONN = MQTTErrorCode.MQTT_ERR_NO_CONN

# Shared by every PUBACK without properties (see FastClient._handle_pubackcomp); never modified.
_PUBACK_REASONS = {
    code: ReasonCode(PacketTypes.PUBACK, identifier=code)
    for code, names in ReasonCode.names.items()
    if any(PacketTypes.PUBACK in packets for packets in names.values())
}
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)
# What an incoming PUBLISH without properties gets: a copy of this (see _empty_properties).
_PUBLISH_PROPERTIES = Properties(PacketTypes.PUBLISH)


def _empty_properties() -> Properties:
    """A new, empty PUBLISH ``Properties``, like paho's but without rebuilding its tables.

    paho's ``Properties()`` builds two dicts and a list of every MQTT 5 property (about as
    much work as the rest of a small PUBLISH); a copy shares those read-only tables. Setting
    a property on the copy works as on paho's own (it lands in the copy's ``__dict__``).
    """
    props = object.__new__(Properties)
    props.__dict__.update(_PUBLISH_PROPERTIES.__dict__)
    return props


def _fixed_header(buf: bytes, pos: int = 0) -> tuple[int, int]:
    """Where the packet starting at ``buf[pos]`` has its body, and how long the body is.

    ``(0, 0)`` when its remaining length is not all in ``buf`` yet, ``(-1, 0)`` when that
    length runs over 4 bytes (a protocol error for paho too).
    """
    length, shift, i, end = 0, 0, pos + 1, len(buf)
    while i < end:
        byte = buf[i]
        i += 1
        length |= (byte & 127) << shift
        if byte < 128:
            return i, length
        shift += 7
        if shift > 21:
            return -1, 0
    return 0, 0


# Received messages, and the outputs published by publish_many, are never waited on: they
# share one condition instead of building a threading.Condition each (a shared one must
# never be waited on: paho's notify() wakes one waiter, maybe another message's).
_UNAWAITED = threading.Condition()
# Topics remembered as matching no message_callback_add filter, at most this many.
PLAIN_TOPICS_MAX = 10000


def _info(mid: int) -> mqtt.MQTTMessageInfo:
    """An ``MQTTMessageInfo`` nobody waits on (its condition is shared, see _UNAWAITED)."""
    info = object.__new__(mqtt.MQTTMessageInfo)
    info.mid = mid
    info._published = False
    info._condition = _UNAWAITED
    info.rc = _SUCCESS
    info._iterpos = 0
    return info


def _mark_published(info: mqtt.MQTTMessageInfo) -> None:
    """``info._set_as_published()``, without taking a lock nobody can be waiting on."""
    if info._condition is _UNAWAITED:
        info._published = True
    else:
        info._set_as_published()


def _message(mid: int, topic: bytes, qos: int, cmd: int, payload: bytes,
             properties: Properties | None) -> mqtt.MQTTMessage:
    """The ``MQTTMessage`` paho's ``_handle_publish`` makes, without its constructor.

    paho's builds an ``MQTTMessageInfo`` with a new ``threading.Condition`` for every
    message, received ones included, where nothing ever waits on it: a fifth of what is
    left of a small message's cost here. The slots are the same and hold the same values.
    """
    info = _info(mid)
    message = object.__new__(mqtt.MQTTMessage)
    message.timestamp = mqtt.time_func()
    message.state = mqtt.mqtt_ms_invalid
    message.dup = cmd & 0x08 != 0
    message.mid = mid
    message._topic = topic
    message.payload = payload
    message.qos = qos
    message.retain = cmd & 0x01 != 0
    message.info = info
    message.properties = properties
    return message


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length "remaining length" field of a packet of ``n`` more bytes."""
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(mid: int, topic: bytes, payload: bytes | bytearray, qos: int,
                   retain: bool, dup: bool, v5: bool) -> bytes:
    """The PUBLISH packet paho's ``_send_publish`` builds, without properties (MQTT 5: an
    empty property list), in one join."""
    size = 2 + len(topic) + len(payload) + (2 if qos else 0) + v5
    return b"".join((bytes((_PUBLISH | (dup & 1) << 3 | qos << 1 | retain,)),
                     remaining_length(size), len(topic).to_bytes(2, "big"), topic,
                     mid.to_bytes(2, "big") if qos else b"", b"\x00" if v5 else b"", payload))


def _out_entry(command: int, packet: bytes | bytearray, mid: int, qos: int,
               info: mqtt.MQTTMessageInfo | None) -> dict:
    """A packet for paho's ``_out_packet`` queue, as its ``_packet_queue`` makes one."""
    return {"command": command, "mid": mid, "qos": qos, "pos": 0, "to_process": len(packet),
            "packet": packet, "info": info}


def idle_in_packet() -> dict:
    """paho's ``_in_packet`` between packets (what its ``_packet_read`` resets it to)."""
    return {"command": 0, "have_remaining": 0, "remaining_count": [], "remaining_mult": 1,
            "remaining_length": 0, "packet": bytearray(b""), "to_process": 0, "pos": 0}


def _packet_size(buf: bytes) -> int:
    """Bytes in all of the packet ``buf`` starts (0: its length is not all there yet)."""
    start, length = _fixed_header(buf)
    return start + length if start > 0 else 0


class FastClient(mqtt.Client):
    """paho's client with a cheaper receive path and our reconnect wait.

    paho's receive path costs several times what the daemon does with a small message;
    here it is cut down, and the bytes and callbacks stay the same.

    Framing: paho reads every packet with three ``recv`` calls (type byte, length, body)
    and, at QoS 0, goes back to ``select`` after each packet: four system calls and a trip
    through its loop for a 40-byte sensor message. Here :meth:`loop_read` asks the socket
    for up to :data:`RECV_CHUNK` bytes and cuts every whole packet out of them itself; a
    packet cut at the end of a chunk waits (in pieces, joined once) for the rest.

    PUBLISH: one at QoS 0 or 1 without MQTT 5 properties (a sensor message) becomes the
    ``MQTTMessage`` paho's ``_handle_publish`` would make, built here (:func:`_message`, with
    an empty ``Properties`` copied from a template, :func:`_empty_properties`) and acknowledged
    by paho's ``_send_puback``. Delivery is paho's ``_handle_on_message`` the first time a
    topic is seen; a topic that no ``message_callback_add`` filter matches is remembered and
    its next messages go straight to ``on_message`` (adding or removing a filter forgets
    them all). Everything else (QoS 2, a PUBLISH with properties, every other packet type)
    goes to paho's own handler unchanged. paho's per-message debug log line ("Received
    PUBLISH ...") is not written for the messages read here.

    PUBACKs: one without properties (the message id and maybe a reason code) skips paho's
    decoding into new reason-code and properties objects; ``on_publish`` gets shared ones
    that say the same. A run of plain PUBACKs (two bytes: the message id; at QoS 1 one
    arrives for every classification) is read in a tight loop, and the queued messages the
    run makes room for are sent once at its end (:meth:`_pubacks`; paho passes over its
    outgoing messages and sends after every PUBACK), the same packets in the same order.

    Reconnect wait: paho's own doubles the delay without jitter and retries a refused login
    as fast as a lost connection; ``wait_policy`` (set by :class:`MqttLink`) replaces it.

    Skipping: ``skip_topic(raw_topic)`` (set by the daemon under ``--shard``) is asked once
    per topic (the answer is remembered) for QoS 0 and auto-acknowledged QoS 1 PUBLISH
    packets, with the topic's bytes as they came; a skipped message is acknowledged as paho
    would and dropped before any message object exists. Runs of messages on topics already
    known to be skipped are walked in a tight loop: a slice and a dict lookup each, their
    PUBACKs queued as one packet, and ``on_skipped(n)`` called once per read with how many
    were dropped. A small read that held only skipped messages waits :data:`SKIP_LINGER_S`
    and reads again (up to :data:`SKIP_ROUNDS` times) before paho's loop selects again.

    Sending: a packet queued from another thread wakes paho's loop with one byte on its
    socket pair only if no wake-up is pending since the loop last wrote (paho: one byte, a
    system call, per packet); the loop writes the queued packets joined, up to
    :data:`WRITE_CHUNK` bytes a ``send`` (paho: one ``send`` each), and a written QoS 0
    PUBLISH gets ``on_publish`` with the shared success objects (paho builds new ones each).
    A PUBLISH without properties is built in one join (:func:`publish_packet`), not field by
    field with a debug line's arguments passed each time.
    :meth:`publish_many` publishes a batch of outputs under one lock, with infos that nobody
    waits on, message ids taken under paho's lock once, and, from another thread than the
    network loop's, the packets queued together with one wake-up. The bytes on the wire
    are paho's.
    """

    wait_policy: Callable[[], None] | None = None
    # Called with the number of messages skipped, once per read that skipped any.
    on_skipped: Callable[[int], None] | None = None
    # Read state, tied to the socket it was read from: a new connection starts empty.
    _rsock = None
    _rparts: list[bytes] = []  # the start of a packet cut at the end of a chunk (own list)
    _rhave = 0  # bytes in _rparts
    _rneed = 0  # bytes that packet has in all (0: its length is not all there yet)
    _kept = False  # the last read held a packet that was not skipped
    _skipped = False  # ... and one that was
    _linger = False  # ... and only skipped ones, few: wait and read again
    _wake_sent = False  # a byte is on its way to wake paho's loop (see _packet_queue)

    def __init__(self, *args, **kwargs):
        # Raw topics that no message_callback_add filter matches (see _deliver).
        self._plain: set[bytes] = set()
        # Raw topic -> what skip_topic said about it (see _skips).
        self._skip_memo: dict[bytes, bool] = {}
        self._skip_topic: Callable[[bytes], bool] | None = None
        self._topics: dict[str, bytes] = {}  # publish_many: topic -> encoded and checked
        super().__init__(*args, **kwargs)

    @property
    def skip_topic(self) -> Callable[[bytes], bool] | None:
        """``skip_topic(raw_topic) -> bool``: drop that topic's messages unread (see the class)."""
        return self._skip_topic

    @skip_topic.setter
    def skip_topic(self, fn: Callable[[bytes], bool] | None) -> None:
        self._skip_memo.clear()  # what the old one said no longer holds
        self._skip_topic = fn

    def _reconnect_wait(self) -> None:
        if self.wait_policy is None:
            return super()._reconnect_wait()
        self.wait_policy()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        sock = self._sock
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if self._rsock is not sock:
            self._rsock, self._rparts, self._rhave, self._rneed = sock, [], 0, 0
        # A read of nothing but skipped messages lingers and reads again, here rather than
        # through paho's select: on this kind of machine a blocking system call costs
        # 20-30 us of CPU whatever it waits for, as much as 50 skipped messages.
        for _ in range(SKIP_ROUNDS):
            rc = self._read(sock)
            if rc or not self._linger or self._sock is not sock:
                return rc
            time.sleep(SKIP_LINGER_S)
        return _SUCCESS

    def _read(self, sock) -> MQTTErrorCode:
        """One ``recv`` and every whole packet in it; sets ``_linger``."""
        self._linger = False
        try:
            # Raises BlockingIOError when nothing is there (TLS too); b"" is EOF.
            data = self._sock_recv(min(max(RECV_CHUNK, self._rneed - self._rhave), RECV_MAX))
        except BlockingIOError:
            return _SUCCESS
        except OSError as err:  # TimeoutError included, as in paho's _packet_read
            self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return self._loop_rc_handle(_CONN_LOST)
        if not data:
            return self._loop_rc_handle(_CONN_LOST)
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        parts = self._rparts
        if parts:
            parts.append(data)
            self._rhave += len(data)
            if self._rhave < self._rneed:
                return _SUCCESS
            data = b"".join(parts)
            parts.clear()
            self._rhave = 0
        self._kept = self._skipped = False
        rc, pos = self._frames(data, sock)
        if rc:
            return self._loop_rc_handle(rc)
        if self._sock is not sock:  # a handler disconnected: what is left belonged to it
            return _SUCCESS
        if pos < len(data):
            rest = data[pos:]
            self._rparts.append(rest)
            self._rhave = len(rest)
            self._rneed = _packet_size(rest)
        else:
            self._rneed = 0
        if self._out_packet:  # e.g. PUBACKs for what we just read: send them now
            self.loop_write()
        self._linger = self._skipped and not self._kept and len(data) < SKIP_LINGER_BYTES
        return _SUCCESS

    def _frames(self, buf: bytes, sock) -> tuple[MQTTErrorCode, int]:
        """Handle every whole packet in ``buf``: (paho error code or success, bytes used)."""
        end = len(buf)
        pos = 0
        v5 = self._protocol == mqtt.MQTTv5
        skip = self.skip_topic
        manual = self._manual_ack
        plain = self._plain
        memo = self._skip_memo
        known = memo.get
        skipped = 0
        acks: list[bytes] = []  # PUBACKs of skipped QoS 1 messages, sent as one packet
        try:
            while pos + 1 < end:
                if skip is not None:
                    # Other shards' messages, back to back: a topic already known to be skipped
                    # costs a slice and a dict lookup, no object and no call (see skip_topic).
                    while pos + 3 < end:
                        size = buf[pos + 1]
                        cmd = buf[pos]
                        # a PUBLISH at QoS 0 or 1, less than 128 bytes, topic shorter than 256
                        if size > 127 or cmd & 0xF4 != _PUBLISH or buf[pos + 2]:
                            break
                        stop = pos + 2 + size
                        topic_end = pos + 4 + buf[pos + 3]
                        if stop > end or topic_end + (cmd & 2) > stop or not known(
                                buf[pos + 4:topic_end]):
                            break
                        if cmd & 2:  # QoS 1: acknowledged as paho would, unless acks are manual
                            if manual:
                                break
                            acks.append(buf[topic_end:topic_end + 2])
                        pos = stop
                        skipped += 1
                    if acks:
                        rc = self._send_acks(acks)
                        if rc:
                            return rc, pos
                    if pos + 1 >= end:
                        break
                cmd = buf[pos]
                byte = buf[pos + 1]
                if cmd == _PUBACK and byte == 2 and pos + 3 < end:
                    # Our QoS 1 outputs' PUBACKs, back to back (one per classification).
                    rc, pos = self._pubacks(buf, pos, end)
                    if rc or self._sock is not sock:
                        return rc, pos
                    continue
                if byte < 128:  # most packets here: less than 128 bytes after the fixed header
                    start = pos + 2
                    stop = start + byte
                else:
                    start, length = _fixed_header(buf, pos)
                    if start < 0:
                        return _PROTOCOL, end
                    if not start:
                        break
                    stop = start + length
                if stop > end:
                    break
                if cmd & 0xF0 == _PUBLISH and cmd & 0x06 < 0x04 and stop - start >= 2:
                    qos = cmd >> 1 & 1
                    topic_end = start + 2 + (buf[start] << 8 | buf[start + 1])
                    body = topic_end + 2 * qos  # after the message id
                    if body <= stop:
                        topic = buf[start + 2:topic_end]
                        if skip is not None and (qos == 0 or not manual) and self._skips(topic):
                            pos = stop
                            skipped += 1
                            if qos:
                                rc = self._send_acks([buf[topic_end:topic_end + 2]])
                                if rc:
                                    return rc, pos
                            continue
                        if v5:
                            fast = body < stop and buf[body] == 0  # no properties
                            body += 1
                        else:
                            fast = topic_end > start + 2  # paho refuses an empty 3.1.1 topic
                        self._kept = True
                        if fast:
                            pos = stop
                            mid = buf[topic_end] << 8 | buf[topic_end + 1] if qos else 0
                            message = _message(mid, topic, qos, cmd, buf[body:stop],
                                               _empty_properties() if v5 else None)
                            if topic in plain:
                                self._on_plain(message)
                            else:
                                self._deliver(message, topic)
                            if qos and not manual:
                                rc = self._send_puback(mid)
                                if rc:
                                    return rc, pos
                            if self._sock is not sock:
                                return _SUCCESS, pos
                            continue
                pos = stop
                self._kept = True
                rc = self._paho_handle(cmd, buf[start:stop])
                if rc or self._sock is not sock:
                    return rc, pos
            return _SUCCESS, pos
        finally:  # whatever ended the read, count what it skipped
            if skipped:
                self._skipped = True
                if self.on_skipped is not None:
                    self.on_skipped(skipped)

    def _pubacks(self, buf: bytes, pos: int, end: int) -> tuple[MQTTErrorCode, int]:
        """A run of plain PUBACKs (a message id and nothing else) from ``buf[pos]`` on.

        What paho's ``_handle_pubackcomp`` does for each (``on_publish``, the message out of
        ``_out_messages``, its info published, one fewer in flight), with the queued
        messages that this makes room for sent once at the end of the run (paho: a pass
        over ``_out_messages`` and a send after every PUBACK; the same packets in the same
        order). At QoS 1 and hop 32 one arrives for every classification.
        Returns (paho error code or success, position after the run).
        """
        out = self._out_messages
        on_publish = self.on_publish
        freed = 0
        with self._out_message_mutex:
            while pos + 3 < end and buf[pos] == _PUBACK and buf[pos + 1] == 2:
                mid = buf[pos + 2] << 8 | buf[pos + 3]
                pos += 4
                message = out.get(mid)
                if message is None:
                    continue
                if freed and message.state == mqtt.mqtt_ms_queued:
                    # Not sent yet: paho would have sent it after an earlier PUBACK of
                    # this run (only a made-up or a reused id gets here), so send now.
                    freed = 0
                    rc = self._update_inflight()
                    if rc:
                        return rc, pos
                if on_publish is not None:
                    self._call_on_publish(on_publish, mid)
                del out[mid]
                _mark_published(message.info)
                if message.qos > 0:
                    self._inflight_messages -= 1
                    freed += 1
            if freed and self._max_inflight_messages > 0:
                return self._update_inflight(), pos
        return _SUCCESS, pos

    def _skips(self, topic: bytes) -> bool:
        """``skip_topic(topic)``, asked once per topic (remembered, see _frames)."""
        memo = self._skip_memo
        skip = memo.get(topic)
        if skip is None:
            skip = bool(self.skip_topic(topic))
            if len(memo) >= PLAIN_TOPICS_MAX:
                memo.clear()
            memo[topic] = skip
        return skip

    def _send_acks(self, mids: list[bytes]) -> MQTTErrorCode:
        """Queue the PUBACKs of skipped messages (their ids as they came) as one packet:
        the bytes paho's ``_send_puback`` would queue one by one (empties ``mids``)."""
        packet = b"".join(b"\x40\x02" + mid for mid in mids)
        mids.clear()
        return self._packet_queue(_PUBACK, packet, 0, 1)

    def _on_plain(self, message: mqtt.MQTTMessage) -> None:
        """Deliver to ``on_message`` what no topic filter matches, as paho's
        ``_handle_on_message`` does (its exception handling included)."""
        on_message = self._on_message
        if on_message is None:
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise

    def _deliver(self, message: mqtt.MQTTMessage, topic: bytes) -> None:
        """paho's own delivery; remember the topic if no ``message_callback_add`` filter
        matches it (then the next message on it goes straight to ``on_message``)."""
        try:
            text = message.topic
        except UnicodeDecodeError:  # paho hands these to on_message, never to a filter
            text = None
        if text is not None:
            with self._callback_mutex:
                if not any(True for _ in self._on_message_filtered.iter_match(text)):
                    if len(self._plain) >= PLAIN_TOPICS_MAX:
                        self._plain.clear()
                    self._plain.add(topic)
        self._handle_on_message(message)

    def message_callback_add(self, sub: str, callback) -> None:
        with self._callback_mutex:  # a new filter may match a topic we called plain
            super().message_callback_add(sub, callback)
            self._plain.clear()

    def message_callback_remove(self, sub: str) -> None:
        with self._callback_mutex:
            super().message_callback_remove(sub)
            self._plain.clear()

    def _paho_handle(self, cmd: int, packet: bytes) -> MQTTErrorCode:
        """One whole packet through paho's own dispatcher, as its ``_packet_read`` would."""
        self._in_packet = {"command": cmd, "have_remaining": 1, "remaining_count": [],
                           "remaining_mult": 1, "remaining_length": len(packet),
                           "packet": bytearray(packet), "to_process": 0, "pos": 0}
        try:
            rc = self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = _PROTOCOL
        self._in_packet = idle_in_packet()
        return rc

    def _handle_pubackcomp(self, cmd) -> MQTTErrorCode:
        # A PUBACK is a message id, maybe a reason code, rarely properties; paho decodes
        # every one into a new ReasonCode and a new Properties object, which costs more than
        # the publish itself (about 12 us; one PUBACK per classification at QoS 1).
        packet = self._in_packet["packet"]
        size = len(packet)
        reason = None
        if cmd == "PUBACK":
            if size == 2:
                reason = _PUBACK_REASONS[0]
            elif self._protocol == mqtt.MQTTv5 and (size == 3 or size == 4 and packet[3] == 0):
                reason = _PUBACK_REASONS.get(packet[2])
        if reason is None:
            return super()._handle_pubackcomp(cmd)
        mid = packet[0] << 8 | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, reason, _NO_PROPERTIES)
        return _SUCCESS

    # The send side.

    def _packet_queue(self, command: int, packet: bytes | bytearray, mid: int, qos: int,
                      info: mqtt.MQTTMessageInfo | None = None) -> MQTTErrorCode:
        # paho writes a byte to its socket pair for every packet queued, to wake its loop
        # from select: a system call per publish, and a wake-up of the network thread per
        # output at QoS 0. One byte until the loop has written is enough, and none from the
        # network thread itself (it writes what is queued before it selects again).
        if not self._queues_itself():
            return super()._packet_queue(command, packet, mid, qos, info)
        self._out_packet.append(_out_entry(command, packet, mid, qos, info))
        self._wake_loop()
        return _SUCCESS

    def _queues_itself(self) -> bool:
        """True when :meth:`_packet_queue` queues and wakes the loop itself (a loop thread
        runs, and no external event loop is told about writes), else paho's own."""
        return self._thread is not None and self._on_socket_register_write is None

    def _builds_publish(self) -> bool:
        """True when :meth:`_send_publish` may build a PUBLISH itself (connected, and no
        logger that paho would pass the packet's debug line to)."""
        return self._sock is not None and self.on_log is None and self._logger is None

    def _wake_loop(self) -> None:
        """Packets were queued: wake paho's loop, once until it has written (see
        _packet_queue)."""
        # After the append: _packet_write clears the flag before it takes the queue, so
        # either it takes this packet or this thread sees the flag cleared and wakes it.
        thread = self._thread  # read once: loop_stop may clear it meanwhile
        if (thread is not None and not self._wake_sent
                and thread.ident != threading.get_ident()):
            self._wake_sent = True
            wake = self._sockpairW
            if wake is not None:
                try:
                    wake.send(b"0")
                except BlockingIOError:
                    pass
        self._call_socket_register_write()

    def _packet_write(self) -> MQTTErrorCode:
        # paho sends every queued packet with its own send() and, at QoS 0, builds a new
        # ReasonCode and Properties for on_publish after each: with many small outputs that
        # was most of the network thread's work (QoS 0 outputs cost more than QoS 1). Here
        # the queued packets go out joined, up to WRITE_CHUNK bytes a send; what each
        # packet's completion does is paho's, with the shared PUBACK objects.
        self._wake_sent = False
        out = self._out_packet
        while out:
            first = out[0]
            if first["command"] & 0xF0 == _DISCONNECT:  # paho's own: it closes the socket
                return super()._packet_write()
            batch = [out.popleft()]
            size = first["to_process"]
            while out and size < WRITE_CHUNK and out[0]["command"] & 0xF0 != _DISCONNECT:
                batch.append(out.popleft())
                size += batch[-1]["to_process"]
            if len(batch) == 1:
                data = first["packet"][first["pos"]:]
            else:
                data = b"".join([p["packet"][p["pos"]:] if p["pos"] else p["packet"]
                                 for p in batch])
            try:
                sent = self._sock_send(data)
            except (AttributeError, ValueError):
                out.extendleft(reversed(batch))
                return _SUCCESS
            except BlockingIOError:
                out.extendleft(reversed(batch))
                return _AGAIN
            except OSError as err:
                out.extendleft(reversed(batch))
                self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
                return _CONN_LOST
            if sent <= 0:
                out.extendleft(reversed(batch))
                break
            for i, packet in enumerate(batch):
                todo = packet["to_process"]
                if sent < todo:  # the rest of this one and the ones after it: next send
                    packet["pos"] += sent
                    packet["to_process"] = todo - sent
                    out.extendleft(reversed(batch[i:]))
                    break
                sent -= todo
                packet["pos"] += todo
                packet["to_process"] = 0
                if packet["command"] & 0xF0 == _PUBLISH and packet["qos"] == 0:
                    self._published(packet)
        with self._msgtime_mutex:
            self._last_msg_out = mqtt.time_func()
        return _SUCCESS

    def _send_publish(self, mid: int, topic: bytes, payload: bytes | bytearray = b"",
                      qos: int = 0, retain: bool = False, dup: bool = False,
                      info: mqtt.MQTTMessageInfo | None = None,
                      properties: Properties | None = None) -> MQTTErrorCode:
        # paho builds a PUBLISH in a bytearray field by field and passes a debug line's
        # arguments to _easy_log for every one (about a third of a classification's publish);
        # the same bytes in one join. Properties, an empty payload, a client that logs, or
        # no socket: paho's own.
        if (properties is not None or not payload or type(topic) is not bytes
                or len(topic) > 65535 or type(payload) not in (bytes, bytearray)
                or not self._builds_publish()):
            return super()._send_publish(mid, topic, payload, qos, retain, dup, info,
                                         properties)
        packet = publish_packet(mid, topic, payload, qos, retain, dup,
                                self._protocol == mqtt.MQTTv5)
        return self._packet_queue(_PUBLISH, packet, mid, qos, info)

    def _published(self, packet: dict) -> None:
        """A QoS 0 PUBLISH is written: ``on_publish`` and its info, as paho's _packet_write."""
        on_publish = self.on_publish
        if on_publish:
            self._call_on_publish(on_publish, packet["mid"])
        _mark_published(packet["info"])

    def _call_on_publish(self, on_publish, mid: int) -> None:
        """``on_publish`` of a successful publish, with the shared reason and properties
        (paho's own exception handling)."""
        with self._in_callback_mutex:
            try:
                if self._callback_api_version == CallbackAPIVersion.VERSION1:
                    on_publish(self, self._userdata, mid)
                else:
                    on_publish(self, self._userdata, mid, _PUBACK_REASONS[0], _NO_PROPERTIES)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_publish: %s", err)
                if not self.suppress_exceptions:
                    raise

    def _topic_bytes(self, messages: list[tuple[str, str | bytes]]) -> list[bytes]:
        """The messages' topics encoded and checked as paho's ``publish`` does (raises its
        ValueError), each distinct topic once (outputs repeat their devices' topics)."""
        known = self._topics
        out = []
        for topic, _ in messages:
            raw = known.get(topic)
            if raw is None:
                raw = topic.encode("utf-8")
                self._raise_for_invalid_topic(raw)
                if len(known) >= PLAIN_TOPICS_MAX:
                    known.clear()
                known[topic] = raw
            out.append(raw)
        return out

    def publish_many(self, messages: list[tuple[str, str | bytes]], qos: int) -> int:
        """Publish ``(topic, payload)`` pairs at QoS 0 or 1, not retained, no properties.

        What :meth:`publish` does for each, the same bytes and the same queueing (in flight,
        queued, refused beyond ``max_queued_messages``), without what it returns: the
        messages get infos nobody can wait on (no ``threading.Condition`` each), and the
        outgoing-message lock is taken once. For many outputs nobody waits for
        (classifications); use :meth:`publish` for a message you want to wait on.

        Returns
        -------
        int
            Messages refused because the outgoing queue is full.
        """
        if qos not in (0, 1):
            raise ValueError(f"publish_many takes QoS 0 or 1, not {qos}")
        encoded = self._topic_bytes(messages)
        mids = self._mids(len(messages))
        if qos == 0:
            for topic, (_, payload), mid in zip(encoded, messages, mids, strict=True):
                info = _info(mid)
                info.rc = self._send_publish(mid, topic, _encode_payload(payload), 0, False,
                                             False, info, None)
            return 0
        # The packets of those that go out now are built here and queued at once (one
        # wake-up for the batch), when _send_publish would take its fast path for each.
        direct = self._queues_itself() and self._builds_publish()
        v5 = self._protocol == mqtt.MQTTv5
        packets: list[dict] = []
        refused = 0
        out = self._out_messages
        limit = self._max_queued_messages
        with self._out_message_mutex:
            for topic, (_, payload), mid in zip(encoded, messages, mids, strict=True):
                payload = _encode_payload(payload)
                if limit > 0 and len(out) >= limit or mid in out:
                    refused += 1
                    continue
                message = _message(mid, topic, 1, _PUBLISH | 2, payload, None)
                out[mid] = message
                inflight = self._max_inflight_messages
                if inflight == 0 or self._inflight_messages < inflight:
                    self._inflight_messages += 1
                    message.state = mqtt.mqtt_ms_wait_for_puback
                    if direct and payload:
                        packet = publish_packet(mid, topic, payload, 1, False, False, v5)
                        packets.append(_out_entry(_PUBLISH, packet, mid, 1, message.info))
                        continue
                    if packets:  # keep the order
                        self._out_packet.extend(packets)
                        packets.clear()
                    rc = self._send_publish(mid, topic, payload, 1, False, False, message.info,
                                            None)
                    if rc == _NO_CONN:
                        self._inflight_messages -= 1
                        message.state = mqtt.mqtt_ms_publish
                    message.info.rc = rc
                else:
                    message.state = mqtt.mqtt_ms_queued
            if packets:
                self._out_packet.extend(packets)
        if packets:
            self._wake_loop()
        return refused

    def _mids(self, n: int) -> list[int]:
        """``n`` message ids as ``n`` calls of paho's ``_mid_generate`` give them, under its
        lock once."""
        mids = []
        with self._mid_generate_mutex:
            last = self._last_mid
            for _ in range(n):
                last = last + 1 if last < 65535 else 1
                mids.append(last)
            self._last_mid = last
        return mids
