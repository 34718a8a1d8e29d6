"""edge.paho_fast leans on paho's internals: fail loudly when a paho release changes them.

:class:`edge.paho_fast.FastClient` overrides private methods of paho's ``Client`` and
cuts packets out of the socket's bytes itself; a renamed method would silently stop being
called (the daemon would still work, slower), and a changed signature or attribute would
break the receive path. The first checks read the installed paho; when one fails, re-read
paho's ``client.py`` for what changed, adapt ``edge/paho_fast.py`` (and
``PAHO_INTERNALS``), and run tests/test_mqtt_client.py. The others feed the same bytes
(through a socket pair, cut at awkward places) to a ``FastClient`` and to stock paho and
compare what each delivers to ``on_message`` and writes back.
"""

from __future__ import annotations

import contextlib
import inspect
import random
import select
import socket
import struct

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge import paho_fast
from edge.paho_fast import PAHO_INTERNALS, RECV_CHUNK, FastClient, idle_in_packet


@pytest.mark.parametrize("name, params", sorted(PAHO_INTERNALS["methods"].items()))
def test_paho_still_has_the_methods_we_override(name, params):
    method = getattr(mqtt.Client, name, None)
    assert callable(method), f"paho.mqtt.client.Client.{name} is gone: edge/paho_fast.py " \
                             "relies on it"
    got = [p for p in inspect.signature(method).parameters if p != "self"]
    assert got == params, f"paho.mqtt.client.Client.{name} now takes {got}, " \
                          f"edge/paho_fast.py was written for {params}"


@pytest.mark.parametrize("name, caller", sorted(PAHO_INTERNALS["called_from"].items()))
def test_paho_still_calls_them_where_we_expect(name, caller):
    source = inspect.getsource(getattr(mqtt.Client, caller))
    assert f"self.{name}(" in source, f"paho's Client.{caller} no longer calls self.{name}(): " \
                                      f"FastClient's override of {name} would do nothing"


def test_paho_clients_have_the_attributes_we_read():
    client = FastClient(CallbackAPIVersion.VERSION2)
    missing = [a for a in PAHO_INTERNALS["attributes"] if not hasattr(client, a)]
    assert not missing, f"paho clients no longer have {missing}"
    keys = set(client._in_packet)
    assert set(PAHO_INTERNALS["in_packet_keys"]) == keys, f"paho's _in_packet has {keys}"
    # What FastClient resets it to after handing paho a packet is what paho starts with.
    assert idle_in_packet() == mqtt.Client(CallbackAPIVersion.VERSION2)._in_packet


@pytest.mark.parametrize("cls, key", [(mqtt.MQTTMessage, "message_slots"),
                                      (mqtt.MQTTMessageInfo, "message_info_slots")])
def test_paho_messages_have_the_slots_we_fill(cls, key):
    assert sorted(cls.__slots__) == sorted(PAHO_INTERNALS[key]), \
        f"paho's {cls.__name__} now has the slots {cls.__slots__}: edge/paho_fast.py _message " \
        "fills in the old ones"


def test_paho_queues_outgoing_packets_as_we_do():
    client = mqtt.Client(CallbackAPIVersion.VERSION2)  # not connected: the packet stays queued
    client._packet_queue(0x40, b"\x40\x02\x00\x01", 1, 1)
    assert sorted(client._out_packet[0]) == sorted(PAHO_INTERNALS["out_packet_keys"]), \
        f"paho now queues packets as {sorted(client._out_packet[0])}: edge/paho_fast.py " \
        "_packet_queue and _packet_write use the old keys"


def test_paho_properties_have_the_attributes_we_copy():
    got = set(vars(Properties(PacketTypes.PUBLISH)))
    assert got == set(PAHO_INTERNALS["properties_attributes"]), \
        f"paho's Properties now keeps {got}: edge/paho_fast.py _empty_properties copies them"


def test_every_override_is_listed():
    # A new override added to FastClient without its entry here would escape the checks.
    overridden = {name for name, value in vars(FastClient).items()
                  if callable(value) and hasattr(mqtt.Client, name) and not name.startswith("__")}
    assert overridden <= set(PAHO_INTERNALS["methods"]), overridden


# Differential tests: the same bytes into stock paho and into FastClient.

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 127, n >> 7
        out.append(byte | (128 if n else 0))
        if not n:
            return bytes(out)


def _publish(topic: bytes, payload: bytes, v5: bool, qos: int = 0, mid: int = 0,
             retain: bool = False, dup: bool = False, props: bytes = b"\x00") -> bytes:
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"")
    body += (props if v5 else b"") + payload
    return bytes([0x30 | dup << 3 | qos << 1 | retain]) + _varint(len(body)) + body


def _stream(v5: bool) -> bytes:
    """Sensor messages, with every case FastClient reads itself or hands to paho."""
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "application/json"
    props.UserProperty = ("site", "a")
    packets = [
        _publish(b"sensors/dev0/a", b'{"x": 0.1, "y": 0.2, "z": 0.3}', v5),
        _publish(b"sensors/dev1/a", b"[1, 2, 3]", v5, qos=1, mid=7),
        _publish(b"sensors/dev2/a", b"", v5, retain=True),
        _publish(b"sensors/dev3/a", b"x" * 200, v5, qos=1, mid=65535, dup=True),  # 2-byte length
        _publish(b"sensors/dev0/a", bytes(range(256)) * 80, v5),  # 3-byte length, over a chunk?
        bytes([0xD0, 0]),  # PINGRESP: paho's handler
        _publish(b"sensors/dev1/a", b"7.5", v5, props=props.pack()),  # properties: paho's path
        _publish(b"sensors/\xff\xfe/a", b"1", v5),  # a topic that is not UTF-8
        _publish(b"sensors/dev2/a", b'{"x": 1}', v5, qos=2, mid=9),  # QoS 2: paho's path
    ]
    packets += [_publish(f"sensors/dev{i % 5}/a".encode(), b'{"x": %d}' % i, v5, qos=i % 2,
                         mid=100 + i) for i in range(300)]
    return b"".join(packets)


class Counting(FastClient):
    """Counts the PUBLISH packets handed to paho's own ``_handle_publish``."""

    handled = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        Counting.handled = 0

    def _handle_publish(self):
        Counting.handled += 1
        return super()._handle_publish()


def _run(cls, data: bytes, cuts: list[int], protocol, skip=None, manual_ack=False):
    """Feed ``data`` cut at ``cuts`` to a client of ``cls``: (messages, bytes written back)."""
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client = cls(CallbackAPIVersion.VERSION2, protocol=protocol, manual_ack=manual_ack)
    client._sock = ours
    got = []

    def on_message(c, userdata, m, via="on_message"):
        props = None if m.properties is None else m.properties.json()
        got.append((via, m._topic, m.payload, m.qos, m.mid, m.retain, m.dup, props, m.state,
                    m.info.mid, m.info.rc, m.info.is_published(), type(m.timestamp)))

    # A topic filter takes its messages away from on_message, in both clients.
    client.message_callback_add("sensors/dev4/#",
                                lambda c, u, m: on_message(c, u, m, via="filter"))

    if skip is None:
        client.on_message = on_message
    else:
        client.skip_topic = skip
        client.on_message = lambda c, u, m: None if skip(m._topic) else on_message(c, u, m)
    for lo, hi in zip([0, *cuts], [*cuts, len(data)], strict=True):
        broker.sendall(data[lo:hi])
        while select.select([ours], [], [], 0)[0]:  # stock paho reads one packet a call
            assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
    broker.setblocking(False)
    try:
        written = broker.recv(1 << 20)
    except BlockingIOError:
        written = b""
    ours.close()
    broker.close()
    return got, written


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["v5", "v3.1.1"])
@pytest.mark.parametrize("cutting", ["whole", "random", "bytes"])
def test_fast_client_delivers_what_paho_delivers(protocol, cutting):
    data = _stream(protocol == mqtt.MQTTv5)
    if cutting == "whole":
        cuts = []
    elif cutting == "random":  # packets and length bytes cut across reads
        cuts = sorted(random.Random(1).sample(range(1, len(data)), 60))
    else:  # one byte a read, for the first packets
        cuts = list(range(1, 400))
    expected, acks = _run(mqtt.Client, data, cuts, protocol)
    got, written = _run(Counting, data, cuts, protocol)
    # Only the QoS 2 message and (MQTT 5) the one with properties went to paho's own.
    assert Counting.handled == (2 if protocol == mqtt.MQTTv5 else 1)
    assert len(expected) == 307  # not the PINGRESP, not QoS 2 (it waits for its PUBREL)
    assert sum(g[0] == "filter" for g in got) == 60
    assert got == expected
    assert written == acks  # the same PUBACKs (and PUBREC) in the same order


def test_a_packet_larger_than_a_read_arrives_whole():
    payload = bytes(range(256)) * (3 * RECV_CHUNK // 256)
    data = _publish(b"sigmoid-edge/n/model", payload, True, qos=1, mid=5)
    got, written = _run(FastClient, data, [100, RECV_CHUNK, 2 * RECV_CHUNK + 3], mqtt.MQTTv5)
    assert [(g[1], g[2] == payload, g[4]) for g in got] == [(b"sigmoid-edge/n/model", True, 5)]
    assert written == bytes([0x40, 2, 0, 5])  # its PUBACK


@pytest.mark.parametrize("manual_ack", [False, True])
def test_skipped_topics_are_acknowledged_and_not_delivered(manual_ack):
    data = _stream(True)
    cuts = sorted(random.Random(2).sample(range(1, len(data)), 30))
    seen = []

    def skip(topic: bytes) -> bool:
        seen.append(topic)
        return topic.startswith((b"sensors/dev1/", b"sensors/dev3/"))

    expected, acks = _run(mqtt.Client, data, cuts, mqtt.MQTTv5, skip=skip, manual_ack=manual_ack)
    seen.clear()
    got, written = _run(FastClient, data, cuts, mqtt.MQTTv5, skip=skip, manual_ack=manual_ack)
    assert got == expected and len(got) == 307 - 3 - 120
    assert not any(g[1].startswith(b"sensors/dev1/") for g in got)
    assert b"sensors/dev1/a" in seen  # asked with the raw topic
    assert written == acks


def test_reads_never_cross_sockets():
    client = FastClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    got = []
    client.on_message = lambda c, u, m: got.append(m.payload)
    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    try:
        for s in (a, b):
            s.setblocking(False)
        client._sock = a
        assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS  # nothing there: try again later
        packet = _publish(b"sensors/dev0/a", b"new", True)
        a_peer.sendall(packet[:7])  # a packet cut short, then the connection is replaced
        assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS and got == []
        client._sock = b  # a reconnect: what was read from the old socket is stale
        b_peer.sendall(packet)
        assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
        assert got == [b"new"]
        a_peer.close()
        client._sock = a
        assert client.loop_read() == mqtt.MQTT_ERR_CONN_LOST  # EOF still reads as EOF
        assert client._sock is None
    finally:
        client._sock = None
        for s in (a, a_peer, b, b_peer):
            s.close()


def test_a_filter_added_later_takes_its_topic_from_on_message():
    # FastClient remembers topics that no filter matches; a new filter must undo that.
    client = FastClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    got = []
    client.on_message = lambda c, u, m: got.append(("on_message", m.payload))
    ours, broker = socket.socketpair()
    try:
        ours.setblocking(False)
        client._sock = ours
        broker.sendall(_publish(b"sensors/dev0/a", b"1", True))
        client.loop_read()
        client.message_callback_add("sensors/+/a", lambda c, u, m: got.append(("filter",
                                                                              m.payload)))
        broker.sendall(_publish(b"sensors/dev0/a", b"2", True))
        client.loop_read()
        client.message_callback_remove("sensors/+/a")
        broker.sendall(_publish(b"sensors/dev0/a", b"3", True))
        client.loop_read()
    finally:
        client._sock = None
        ours.close()
        broker.close()
    assert got == [("on_message", b"1"), ("filter", b"2"), ("on_message", b"3")]


@contextlib.contextmanager
def _skipping_client(skip):
    """A FastClient on one end of a socket pair, skipping the topics ``skip`` names:
    (client, the broker's end, payloads delivered to on_message)."""
    client = FastClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.skip_topic = skip
    got = []
    client.on_message = lambda c, u, m: got.append(m.payload)
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    try:
        yield client, broker, got
    finally:
        client._sock = None
        ours.close()
        broker.close()


def test_a_read_of_only_skipped_messages_lingers_and_others_do_not(monkeypatch):
    # So that paho's loop wakes up once for many of another shard's messages.
    naps = []
    monkeypatch.setattr("edge.paho_fast.time.sleep", naps.append)
    with _skipping_client(lambda topic: topic.startswith(b"sensors/other")) as (
            client, broker, got):
        broker.sendall(_publish(b"sensors/other/a", b"1", True) * 3)
        client.loop_read()
        assert naps == [paho_fast.SKIP_LINGER_S]  # then read again: nothing, back to select
        broker.sendall(_publish(b"sensors/other/a", b"2", True)
                       + _publish(b"sensors/mine/a", b"3", True))
        client.loop_read()
        assert naps == [paho_fast.SKIP_LINGER_S] and got == [b"3"]  # one of ours: at once


def test_skipped_messages_are_counted_once_per_read():
    asked, counts = [], []

    def skip(topic):
        asked.append(topic)
        return topic.startswith(b"sensors/other")

    with _skipping_client(skip) as (client, broker, got):
        client.on_skipped = counts.append
        other = _publish(b"sensors/other/a", b"1", True)
        broker.sendall(other * 40 + _publish(b"sensors/mine/a", b"2", True) + other * 2
                       + _publish(b"sensors/other/a", b"3", True, qos=1, mid=9) * 2)
        assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
        broker.setblocking(False)
        written = broker.recv(1 << 16)
    assert got == [b"2"] and counts == [44]
    assert asked == [b"sensors/other/a", b"sensors/mine/a"]  # once per topic, remembered
    assert written == bytes([0x40, 2, 0, 9]) * 2  # the QoS 1 ones acknowledged all the same


# The send side: the same bytes as paho's, fewer system calls.

def _sent(client, publish) -> tuple[bytes, dict]:
    """Bytes ``publish(client)`` writes (paho writes at once without a loop thread), and
    the outgoing messages' states."""
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    try:
        publish(client)
        broker.setblocking(False)
        data = b""
        while True:
            try:
                data += broker.recv(1 << 20)
            except BlockingIOError:
                break
        return data, {mid: (m.state, m.qos, m.payload) for mid, m in
                      client._out_messages.items()}
    finally:
        client._sock = None
        ours.close()
        broker.close()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["v5", "v3.1.1"])
@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("loop", ["none", "thread"])
def test_publish_many_writes_what_publish_writes(protocol, qos, loop):
    outputs = [(f"edge/dev{i % 7}/classification", f'{{"label": "{i}"}}') for i in range(50)]
    outputs.append(("edge/dev0/classification", b"\x00bytes"))

    def one_by_one(client):
        return sum(client.publish(t, p, qos=qos).rc == mqtt.MQTT_ERR_QUEUE_SIZE
                   for t, p in outputs)

    clients = []
    for cls in (mqtt.Client, FastClient):
        client = cls(CallbackAPIVersion.VERSION2, protocol=protocol)
        client.max_inflight_messages_set(20)  # the rest wait for PUBACKs, queued
        client.max_queued_messages_set(40)  # and beyond 40 they are refused
        clients.append(client)
    expected = _sent(clients[0], one_by_one)
    refused = []

    def many(client):
        if loop == "thread":  # as from the worker: queued, then written by the network loop
            client._thread = type("Elsewhere", (), {"ident": -1})()
            client._on_socket_register_write = None
        refused.append(client.publish_many(outputs, qos))
        while client._out_packet:
            assert client.loop_write() == mqtt.MQTT_ERR_SUCCESS
        client._thread = None

    got = _sent(clients[1], many)
    assert got == expected
    assert refused == [0 if qos == 0 else 11]
    with pytest.raises(ValueError, match="wildcards"):
        clients[1].publish_many([("edge/+/classification", "x")], qos)


def test_queued_packets_go_out_joined_and_whole_across_short_writes():
    published = []
    client = FastClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_publish = lambda c, u, mid, reason, props: published.append((mid, str(reason)))
    sends = []
    ours, broker = socket.socketpair()
    ours.setblocking(False)

    def short_send(data):  # the kernel takes at most 1000 bytes a call
        sends.append(len(data))
        return ours.send(bytes(data[:1000]))

    client._sock = ours
    client._sock_send = short_send
    client._thread = type("Elsewhere", (), {"ident": -1})()  # packets wait in the queue
    client._on_socket_register_write = None
    try:
        payloads = [b"%04d" % i * 40 for i in range(30)]
        infos = [client.publish("edge/d/classification", p, qos=0) for p in payloads]
        assert not sends and len(client._out_packet) == 30
        while client._out_packet:
            assert client.loop_write() == mqtt.MQTT_ERR_SUCCESS
        broker.setblocking(False)
        data = broker.recv(1 << 20)
    finally:
        client._thread = None
        client._sock = None
        ours.close()
        broker.close()
    v5_header = b"\x30" + _varint(2 + 21 + 1 + 160) + b"\x00\x15edge/d/classification\x00"
    assert data == b"".join(v5_header + p for p in payloads)
    assert len(sends) < 30 and sends[0] > 1000  # joined, not one send a packet
    assert published == [(info.mid, "Success") for info in infos]  # each once, in order
    assert all(info.is_published() for info in infos)


def test_one_wake_up_until_the_loop_has_written():
    client = FastClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client._sockpairR, client._sockpairW = socket.socketpair()
    ours, broker = socket.socketpair()
    client._sock = ours
    client._thread = type("Elsewhere", (), {"ident": -1})()  # the loop runs on another thread

    def wake_bytes():
        client._sockpairR.setblocking(False)
        try:
            return len(client._sockpairR.recv(10000))
        except BlockingIOError:
            return 0

    try:
        for _ in range(25):
            client.publish("edge/d/classification", "x", qos=0)
        assert wake_bytes() == 1  # paho's own: 25
        assert client.loop_write() == mqtt.MQTT_ERR_SUCCESS and not client._out_packet
        client.publish("edge/d/classification", "y", qos=0)
        assert wake_bytes() == 1  # written since: the next one wakes the loop again
    finally:
        client._thread = None
        client._sock = None
        for s in (ours, broker, client._sockpairR, client._sockpairW):
            s.close()


def _drain(sock) -> bytes:
    sock.setblocking(False)
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := sock.recv(1 << 20):
            data += chunk
    return data


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["v5", "v3.1.1"])
@pytest.mark.parametrize("cutting", ["whole", "random"])
def test_pubacks_free_and_send_what_paho_does(protocol, cutting):
    # 60 QoS 1 outputs, 20 in flight: every PUBACK frees a slot for a queued one. FastClient
    # reads runs of PUBACKs itself and refills once a run; the bytes written, on_publish,
    # the infos and the states left must be paho's.
    v5 = protocol == mqtt.MQTTv5
    outputs = [(f"edge/dev{i % 7}/classification", f'{{"label": "{i}"}}') for i in range(60)]
    acks = b"".join(b"\x40\x02" + struct.pack("!H", mid) for mid in [*range(1, 31), 999, 5])
    if v5:  # a PUBACK with a reason code ("no matching subscribers"): paho's own handler
        acks += b"\x40\x03" + struct.pack("!H", 31) + b"\x10"
    acks += _publish(b"sensors/dev0/a", b"1", v5, qos=1, mid=77)  # a message between them
    acks += b"".join(b"\x40\x02" + struct.pack("!H", mid) for mid in range(32, 50))
    cuts = [] if cutting == "whole" else sorted(random.Random(2).sample(range(1, len(acks)), 25))
    results = []
    for cls in (mqtt.Client, FastClient):
        client = cls(CallbackAPIVersion.VERSION2, protocol=protocol)
        client.max_inflight_messages_set(20)
        published, got = [], []
        client.on_publish = lambda c, u, mid, reason, props, out=published: out.append(
            (mid, str(reason)))
        client.on_message = lambda c, u, m, out=got: out.append(m.payload)
        ours, broker = socket.socketpair()
        ours.setblocking(False)
        client._sock = ours
        try:
            infos = [client.publish(t, p, qos=1) for t, p in outputs]
            first = _drain(broker)
            broker.setblocking(True)
            for lo, hi in zip([0, *cuts], [*cuts, len(acks)], strict=True):
                broker.sendall(acks[lo:hi])
                while select.select([ours], [], [], 0)[0]:
                    assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
            written = _drain(broker)
        finally:
            client._sock = None
            ours.close()
            broker.close()
        states = {mid: m.state for mid, m in client._out_messages.items()}
        results.append((first, written, published, got, states,
                        [info.is_published() for info in infos], client._inflight_messages))
    assert results[1] == results[0]
    first, written, published, got, states, done, inflight = results[0]
    assert len(published) == (49 if v5 else 48) and got == [b"1"]
    assert inflight == len(states) == 60 - len(published)  # the rest sent, none left queued
    assert written.count(b"edge/dev") == 40  # the 40 queued ones, as slots were freed
