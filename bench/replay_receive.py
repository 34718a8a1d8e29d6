"""CPU per message of the in-process daemon fed recorded MQTT bytes: no broker, no publishers.

    python bench/replay_receive.py                        # this tree, 4 devices
    python bench/replay_receive.py --shard 0/2 --foreign  # only other shards' messages
    python bench/replay_receive.py --root /path/to/other/worktree   # another commit

One-sample JSON PUBLISH packets (QoS 0, MQTT 5, no properties) are written into one end of
a socket pair by a feeder thread; the daemon's own paho client reads the other end with
``loop_read`` as its network thread would after ``select``, and its worker thread windows,
infers and publishes (QoS 0 outputs, drained by another thread). CPU per message is this
process's CPU time over the run divided by the messages: the receive path, parsing and the
worker, without the broker's and the publishers' noise that the end-to-end parts of
``bench_daemon.py`` carry on a shared machine. Best of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path


def publish_packet(topic: bytes, payload: bytes) -> bytes:
    """An MQTT 5 PUBLISH at QoS 0 without properties."""
    body = struct.pack("!H", len(topic)) + topic + b"\x00" + payload
    n, length = len(body), bytearray()
    while True:
        byte, n = n & 127, n >> 7
        length.append(byte | (128 if n else 0))
        if not n:
            return b"\x30" + bytes(length) + body


def run_once(stream: bytes, n: int, values: dict) -> tuple[float, float, dict]:
    """(CPU us per message, messages per wall second, stats snapshot) of one replay."""
    from paho.mqtt.client import _ConnectionState

    from edge.config import load_config
    from edge.daemon import Daemon

    d = Daemon(load_config(values, env={}))
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    client = d.link.client
    client._sock = ours  # what connect() would have set, and the state it would reach
    client._state = _ConnectionState.MQTT_CS_CONNECTED

    def drain():  # the daemon's outputs
        while True:
            try:
                if not peer.recv(1 << 20):
                    return
            except OSError:
                return

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    d.runner.start()
    feeder = threading.Thread(target=peer.sendall, args=(stream,), daemon=True)
    t0, c0 = time.perf_counter(), time.process_time()
    feeder.start()
    while d.stats.messages_in < n:
        if select.select([ours], [], [], 0.5)[0]:
            client.loop_read()
    while d.runner.queue:
        time.sleep(0.001)
    t1, c1 = time.perf_counter(), time.process_time()
    d.runner.stop()
    client._sock = None
    ours.close()
    drainer.join(2)
    peer.close()
    return (c1 - c0) / n * 1e6, n / (t1 - t0), d.stats.snapshot()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                    help="the sigmoid-edge tree whose edge/ to import (default: this one)")
    ap.add_argument("--messages", type=int, default=30000)
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--shard", default="", help="the daemon's --shard K/N")
    ap.add_argument("--foreign", action="store_true",
                    help="with --shard: only devices another shard owns")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    import numpy as np

    from tests.models import mean_model

    names = [f"dev{i}" for i in range(10 * args.devices)]
    if args.foreign:
        k, n = map(int, args.shard.split("/"))
        names = [d for d in names if zlib.crc32(d.encode()) % n != k]
    n = args.messages
    vals = np.random.default_rng(0).normal(0, 1, (n, 3)).round(4).tolist()
    stream = b"".join(publish_packet(f"sensors/{names[i % args.devices]}/a".encode(),
                                     json.dumps(dict(zip("xyz", vals[i], strict=True))).encode())
                      for i in range(n))
    with tempfile.TemporaryDirectory() as tmp:
        model = mean_model(Path(tmp) / "m.onnx", window=64, hop=32, sample_rate_hz=100.0,
                           name="bench", labels=("a", "b", "c", "d"))
        values = {"model": str(model), "broker": "mqtt://127.0.0.1:1", "node": "replay",
                  "qos": 0, "queue_size": 200000, "output_qos": 0}
        if args.shard:
            values["shard"] = args.shard
        runs = [run_once(stream, n, values) for _ in range(args.repeats)]
    cpu, rate, stats = min(runs, key=lambda r: r[0])
    print(f"{args.root.resolve().name}: {n} msgs from {args.devices} devices"
          f"{' --shard ' + args.shard if args.shard else ''}"
          f"{' (all another shard' + chr(39) + 's)' if args.foreign else ''}: "
          f"{cpu:.1f} us CPU per message (best of {args.repeats}; all "
          f"{[round(r[0], 1) for r in runs]}), {rate:,.0f} msg/s; windows {stats['windows']}, "
          f"not_mine {stats.get('not_mine')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
