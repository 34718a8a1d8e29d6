"""paho's client with a cheaper receive path: the one place that touches paho's internals.

:class:`FastClient` overrides private methods of ``paho.mqtt.client.Client`` (2.x) and
reads private attributes. Everything it relies on is listed in :data:`PAHO_INTERNALS`
and checked by ``tests/test_paho_fast.py`` against the installed paho, so a paho release
that renames or reshapes one fails that test loudly instead of slowing or breaking the
daemon quietly; its behaviour (same bytes, same callbacks as stock paho) is checked
against a real broker by ``tests/test_mqtt_client.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

# Bytes asked of the socket per recv (see FastClient): hundreds of small sensor messages.
RECV_CHUNK = 64 * 1024

# What FastClient relies on in paho.mqtt.client.Client: the methods it overrides or calls,
# with their parameters (self excluded); the paho method that calls each override (if
# paho stops calling it there, the override silently stops working); the instance
# attributes it reads, and the keys of ``_in_packet`` it reads.
PAHO_INTERNALS = {
    "methods": {
        "_sock_recv": ["bufsize"],
        "_handle_pubackcomp": ["cmd"],
        "loop_read": ["max_packets"],
        "loop_write": [],
        "_reconnect_wait": [],
        "_do_on_publish": ["mid", "reason_code", "properties"],
        "_handle_publish": [],
        "_send_puback": ["mid"],
    },
    "called_from": {
        "_sock_recv": "_packet_read",
        "_handle_pubackcomp": "_packet_handle",
        "_reconnect_wait": "loop_forever",
        "loop_read": "_loop",
        "_handle_publish": "_packet_handle",
    },
    "attributes": ["_sock", "_in_packet", "_protocol", "_out_message_mutex", "_out_messages",
                   "_out_packet", "_manual_ack"],
    "in_packet_keys": ["packet", "command"],
}


# Shared by every PUBACK without properties (see FastClient._handle_pubackcomp); never modified.
_PUBACK_REASONS = {
    code: ReasonCode(PacketTypes.PUBACK, identifier=code)
    for code, names in ReasonCode.names.items()
    if any(PacketTypes.PUBACK in packets for packets in names.values())
}
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)


class FastClient(mqtt.Client):
    """paho's client with a cheaper receive path and our reconnect wait.

    Two costs of paho's receive path are cut; the bytes and callbacks are the same.

    Read-ahead: paho reads every packet with three ``recv`` calls (type byte, length,
    body) and, at QoS 0, goes back to ``select`` after each packet: four system calls and a
    trip through its loop for a 40-byte sensor message. Here ``recv`` asks the socket for up
    to :data:`RECV_CHUNK` bytes and serves paho's small reads from that, and
    :meth:`loop_read` handles every packet already read before paho selects again. Same
    bytes in the same order; about 1.4x the messages per CPU-second on small messages
    (BENCHMARKS.md, "Daemon").

    PUBACKs: one without properties (the message id and maybe a reason code) skips paho's
    decoding into new reason-code and properties objects; ``on_publish`` gets shared ones
    that say the same.

    Reconnect wait: paho's own doubles the delay without jitter and retries a refused login
    as fast as a lost connection; ``wait_policy`` (set by :class:`MqttLink`) replaces it.

    Skipping: ``skip_topic(raw_topic)`` (set by the daemon under ``--shard``) is asked first
    for every QoS 0 or auto-acknowledged QoS 1 PUBLISH; when it says True the message is
    acknowledged as paho would and dropped before paho decodes it (most of a message's cost
    for a daemon that keeps one device in N).
    """

    wait_policy: Callable[[], None] | None = None
    skip_topic: Callable[[bytes], bool] | None = None
    # Read-ahead state, tied to the socket it was read from: a new connection starts empty.
    _rbuf = b""
    _rpos = 0
    _rsock = None

    def _reconnect_wait(self) -> None:
        if self.wait_policy is None:
            return super()._reconnect_wait()
        self.wait_policy()

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf) or self._rsock is not self._sock:
            # Raises BlockingIOError when nothing is there, as paho expects; b"" is EOF.
            data = super()._sock_recv(RECV_CHUNK)
            self._rsock = self._sock
            if len(data) <= bufsize:
                self._rbuf, self._rpos = b"", 0
                return data
            self._rbuf, self._rpos = data, 0
        pos = self._rpos
        out = self._rbuf[pos:pos + bufsize]
        self._rpos = pos + len(out)
        return out

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
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_publish(self) -> MQTTErrorCode:
        skip = self.skip_topic
        if skip is not None:
            packet = self._in_packet["packet"]
            qos = (self._in_packet["command"] & 0x06) >> 1
            if len(packet) >= 2 and (qos == 0 or qos == 1 and not self._manual_ack):
                end = 2 + (packet[0] << 8 | packet[1])
                if len(packet) >= end + 2 * qos and skip(bytes(packet[2:end])):
                    if qos == 0:
                        return MQTTErrorCode.MQTT_ERR_SUCCESS
                    return self._send_puback(packet[end] << 8 | packet[end + 1])
        return super()._handle_publish()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        # Whole packets may be waiting in the read-ahead, where select() cannot see them.
        while (rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._rpos < len(self._rbuf)
               and self._sock is not None and self._rsock is self._sock):
            if self._out_packet:  # e.g. PUBACKs for what we just read: send them as we go
                self.loop_write()
            rc = super().loop_read(max_packets)
        return rc
