"""edge.mqtt's paho client: its own framing and the PUBACK fast path change no byte or callback.

Against a real mosquitto, with ``mosquitto_pub`` as the sender: the client must
deliver exactly what a stock paho client delivers, in order, across small packets, packets
larger than one read and a reconnect; PUBACK reason codes must reach ``on_publish`` as paho
would decode them.
"""

from __future__ import annotations

import subprocess
import threading

import paho.mqtt.client as mqtt
import pytest

from edge import paho_fast
from edge.mqtt import build_client
from edge.paho_fast import RECV_CHUNK
from tests.mqtt_helpers import Broker, require


def _subscriber(client, broker, topic: str, qos: int):
    """Connect ``client``, subscribe, return (received list, subscribed event)."""
    got: list[tuple[str, bytes]] = []
    subscribed = threading.Event()
    client.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(topic, qos)
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert subscribed.wait(5), "no SUBACK"
    return got


def _wait(predicate, what: str, timeout: float = 20.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        done.wait(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("qos", [0, 1])
def test_read_ahead_delivers_what_stock_paho_delivers(broker, tmp_path, qos):
    # Small messages in bulk (many per read), and large ones that span several reads,
    # interleaved in one stream from one publisher so the order is defined.
    payloads = []
    for i in range(3000):
        if i % 500 == 250:
            payloads.append(bytes([65 + i % 26]) * (RECV_CHUNK * 2 + 123))
        else:
            payloads.append(f'{{"x": {i}, "y": {i * 0.5}}}'.encode())
    ours, _ = build_client(broker.url)
    stock = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    got_ours = _subscriber(ours, broker, "rt/#", qos)
    got_stock = _subscriber(stock, broker, "rt/#", qos)
    try:
        lines = tmp_path / "small.txt"
        pub = require("mosquitto_pub")
        # mosquitto_pub -l sends a line per message; the large ones go with -f in between.
        chunks, current = [], []
        for p in payloads:
            if len(p) > RECV_CHUNK:
                chunks.append(current)
                chunks.append(p)
                current = []
            else:
                current.append(p)
        chunks.append(current)
        for k, chunk in enumerate(chunks):
            if isinstance(chunk, bytes):
                big = tmp_path / f"big{k}.bin"
                big.write_bytes(chunk)
                subprocess.run([pub, "-h", broker.host, "-p", str(broker.port), "-t", "rt/a",
                                "-q", str(qos), "-f", str(big)], check=True, timeout=30)
            elif chunk:
                lines.write_bytes(b"\n".join(chunk) + b"\n")
                subprocess.run([pub, "-h", broker.host, "-p", str(broker.port), "-t", "rt/a",
                                "-q", str(qos), "-l"], stdin=lines.open("rb"), check=True,
                               timeout=30)
        _wait(lambda: len(got_stock) >= len(payloads) and len(got_ours) >= len(payloads),
              f"{len(payloads)} messages on both clients")
    finally:
        for c in (ours, stock):
            c.disconnect()
            c.loop_stop()
    assert [p for _, p in got_stock] == payloads
    assert got_ours == got_stock


def test_read_ahead_starts_clean_after_a_reconnect(tmp_path):
    broker = Broker(tmp_path / "b").start()
    client, _ = build_client(broker.url)
    reconnected = threading.Event()
    connects = []

    def on_connect(c, *a):
        connects.append(1)
        c.subscribe("rc/#", 1)
        if len(connects) > 1:
            reconnected.set()

    got = []
    client.on_connect = on_connect
    client.on_message = lambda c, u, m: got.append(m.payload)
    client.reconnect_delay_set(0.1, 0.2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        _wait(lambda: connects, "first connection")
        broker.restart()
        assert reconnected.wait(20), "no reconnect"
        _wait(lambda: client._sock is not None, "a socket")
        pub = require("mosquitto_pub")
        for i in range(5):
            subprocess.run([pub, "-h", broker.host, "-p", str(broker.port), "-t", "rc/a",
                            "-q", "1", "-m", f"after-{i}"], check=True, timeout=10)
        _wait(lambda: len(got) >= 5, "five messages after the reconnect")
    finally:
        client.disconnect()
        client.loop_stop()
        broker.stop()
    assert got == [f"after-{i}".encode() for i in range(5)]


def test_puback_reason_codes_reach_on_publish(broker):
    # mosquitto answers a QoS 1 publish nobody subscribed to with reason 16 "No matching
    # subscribers" (3 bytes), and one somebody did subscribe to with a bare 2-byte PUBACK.
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    _subscriber(watcher, broker, "watched/#", 1)
    client, _ = build_client(broker.url)
    reasons: dict[int, str] = {}
    done = threading.Event()

    def on_publish(c, u, mid, reason_code, properties):
        reasons[mid] = (reason_code.value, str(reason_code), properties.json())
        if len(reasons) == 2:
            done.set()

    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        a = client.publish("nobody/listens", b"1", qos=1)
        b = client.publish("watched/x", b"2", qos=1)
        assert done.wait(10), f"PUBACKs: {reasons}"
        a.wait_for_publish(5)
        b.wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
        watcher.disconnect()
        watcher.loop_stop()
    assert reasons[a.mid] == (16, "No matching subscribers", {})
    assert reasons[b.mid] == (0, "Success", {})
    assert a.is_published() and b.is_published()


def test_shared_puback_reasons_match_pahos_decoding():
    # The fast path hands out shared objects: each must equal what paho builds itself.
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    assert set(paho_fast._PUBACK_REASONS) >= {0, 16, 128, 135, 151}
    for code, shared in paho_fast._PUBACK_REASONS.items():
        decoded = ReasonCode(PacketTypes.PUBACK)
        decoded.unpack(bytes([code]))
        assert (shared.value, str(shared)) == (decoded.value, str(decoded))
        assert shared.packetType == PacketTypes.PUBACK
