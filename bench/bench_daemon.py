"""Benchmark the edge daemon against its goals, side by side on one mosquitto broker.

    python bench/bench_daemon.py           # full run (about 2 minutes)
    python bench/bench_daemon.py --quick   # smoke run (about 30 s)

1. Throughput on one-sample JSON messages: the daemon (parse, enqueue, window, infer,
   publish) vs a null paho subscriber that only ``json.loads`` each message, same QoS, same
   broker, same publishers (``mosquitto_pub -l``, one per device), alternating rounds.
   Goal: >= 0.95x. The daemon runs as installed (orjson) and with the standard library's
   json only; a second null subscriber on edge.mqtt's client (own framing) shows what the
   daemon's own work costs on top of the same receive path.
2. Samples/s with batch payloads (``{"samples": [[x, y, z] * 100]}``), as installed and
   with the standard library's json only. Goal: >= 500k/s.
3. p99 publish-to-classification latency at 1k msg/s spread over 100 devices, daemon as a
   real ``sigmoid-edge run`` process; each sample's ``ts`` is its publish time, so
   ``window_end`` of a classification is the publish time of the message that completed
   the window. Goal: <= 10 ms.
4. RSS of that daemon process with its model loaded. Goal: <= 75 MB.
5. Start to subscribed: process start to the retained ``online`` status (published right
   after the subscription). Goal: <= 1.5 s.
6. Shards (``--only shards``): one-sample JSON from 20 devices, one ``sigmoid-edge run``
   process vs two with ``--shard 0/2`` and ``--shard 1/2`` on the same broker: summed
   classification throughput, each daemon's CPU per owned message vs the single daemon's,
   and the share of a shard daemon's CPU spent on the other shard's messages (measured by
   sending it only those; also less what the daemon spends per second with no input at
   all, measured for 2 s before each round). On a 2-core machine the broker and publishers
   compete for the same cores, so this measures cost more than scaling.
7. The same batches (100 samples x 3 channels) as JSON, binary sample blocks, CBOR and
   Sparkplug B DDATA (metrics by alias), alternating rounds (``--only formats``). Goals:
   binary >= 3M samples/s and >= 4x JSON; Sparkplug B >= JSON. The rate stops the clock
   when the worker has classified the last window; its QoS 1 outputs may still be waiting
   in the client for the broker (20 in flight), so a second rate waits until the broker
   has acknowledged every classification.
8. Metrics scrape: one-sample JSON throughput (QoS 1) of the daemon with ``--metrics-port``
   and a client process fetching ``/metrics`` every second, vs the same daemon without a
   metrics server (and the client process idle), in pairs of rounds whose order alternates;
   the median and range of the per-pair ratios (``--only scrape``). Goal: within 3%.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from edge.paho_fast import remaining_length as _remaining_length  # noqa: E402
from edge.stats import rss_bytes  # noqa: E402
from tests.models import mean_model  # noqa: E402
from tests.mqtt_helpers import Broker, require  # noqa: E402

try:
    import orjson  # noqa: F401

    HAVE_ORJSON = True
except ImportError:
    HAVE_ORJSON = False

# Seconds each --shard benchmark daemon is watched with no input, for its idle CPU rate.
IDLE_S = 2.0
# Paced publishing (RawBlast with ticks): one send of that tick's messages every PACE_TICK_S;
# part [6]'s paced rounds send PACED_RATE one-sample messages a second.
PACE_TICK_S = 0.00025
PACED_RATE = 20000
# Unbounded queues so a slow subscriber is measured, not broker drops. set_tcp_nodelay: without
# it mosquitto's own Nagle delays small publishes to subscribers (p99 latency ~250 ms here).
BROKER_CONF = ("max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\n"
               "set_tcp_nodelay true\n")


def pub_files(workdir: Path, n: int, devices: int, payload, topic: str = "sensors/dev{d}/a",
              encoding: str = "utf-8") -> list[tuple[str, Path]]:
    per = n // devices
    out = []
    for d in range(devices):
        path = workdir / f"dev{d}.txt"
        path.write_text("\n".join(payload(i) for i in range(per)) + "\n", encoding=encoding)
        out.append((topic.format(d=d), path))
    return out


def one_sample_files(workdir: Path, n: int, devices: int = 4, seed: int = 0):
    """``n`` one-sample JSON objects ``{"x", "y", "z"}`` in one publisher file per device."""
    vals = np.random.default_rng(seed).normal(0, 1, (n, 3)).round(4).tolist()
    return pub_files(workdir, n, devices,
                     lambda i: json.dumps(dict(zip("xyz", vals[i], strict=True))))


def blast(broker: Broker, files, qos: int) -> None:
    """Start one mosquitto_pub -l per device file, all at once; wait for them."""
    procs = []
    for topic, path in files:
        f = open(path, "rb")
        procs.append((subprocess.Popen(
            [require("mosquitto_pub"), "-h", broker.host, "-p", str(broker.port), "-t", topic,
             "-q", str(qos), "-l"], stdin=f), f))
    for p, f in procs:
        p.wait()
        f.close()


class NullSubscriber:
    """A paho subscriber that only json.loads each message (the comparison baseline).

    ``edge_client``: on edge.mqtt's client (its own framing) instead of a stock paho client.
    ``loads``: what it does with each payload instead; ``topic``: what it subscribes to.
    """

    def __init__(self, broker: Broker, qos: int, edge_client: bool = False,
                 loads=json.loads, topic: str = "sensors/+/#"):
        self.count = 0
        self.first = self.last = 0.0
        if edge_client:
            from edge.mqtt import build_client

            self.client = build_client(broker.url)[0]
        else:
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        ready = threading.Event()

        def on_message(client, userdata, msg):
            if not self.count:
                self.first = (time.perf_counter(), time.process_time())
            loads(msg.payload)
            self.count += 1

        self.client.on_message = on_message
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(topic, qos)
        ready.wait(5)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def run_null(broker, files, n, qos, edge_client: bool = False, blast_with=None,
             **kwargs) -> tuple[float, float]:
    """(messages per wall second, messages per CPU second of this process).

    ``blast_with(broker, files, qos)`` publishes instead of :func:`blast`; ``kwargs`` go to
    :class:`NullSubscriber`.
    """
    sub = NullSubscriber(broker, qos, edge_client, **kwargs)
    (blast_with or blast)(broker, files, qos)
    deadline = time.monotonic() + 120
    while sub.count < n and time.monotonic() < deadline:
        time.sleep(0.002)  # the same completion poll as for the daemon
    done = (time.perf_counter(), time.process_time())
    sub.close()
    if sub.count < n:
        raise RuntimeError(f"null subscriber got {sub.count} of {n}")
    return n / (done[0] - sub.first[0]), n / (done[1] - sub.first[1])


class Scraper:
    """Fetch ``url`` every ``interval`` seconds from a child process, as Prometheus would.

    The child (this script with ``--scrape``) starts before the round is timed and stays
    for the whole round, so neither its start nor its CPU is counted as the daemon's, and
    no process is started per scrape (a ``curl`` a second cost more than the scrape). With
    ``url=None`` it only waits: the rounds without metrics get the same idle process.
    """

    def __init__(self, url: str | None, interval: float = 1.0):
        self.proc = subprocess.Popen([sys.executable, __file__, "--scrape", url or "-",
                                      str(interval)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the scraper process did not start")
        self.times: list[float] = []
        self.sizes: list[int] = []

    def stop(self):
        out = self.proc.communicate("", timeout=30)[0]  # EOF on its stdin: it stops
        for line in filter(None, out.splitlines()):
            took, size = line.split()
            self.times.append(float(took))
            self.sizes.append(int(size))


def scrape_main(url: str, interval: str) -> int:
    """``--scrape``: the child side of :class:`Scraper`; one line per scrape at the end."""
    from urllib.request import urlopen

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print("ready", flush=True)
    rows = []
    while not stop.wait(0 if url != "-" and not rows else float(interval)):
        if url == "-":
            continue
        began = time.perf_counter()
        with urlopen(url, timeout=5) as reply:
            size = len(reply.read())
        rows.append(f"{time.perf_counter() - began:.6f} {size}")
    if rows:
        print("\n".join(rows), flush=True)
    return 0


def run_daemon_inproc(broker, model, files, n, qos, samples_per_msg: int = 1,
                      fast_json: bool | None = None, payload: str = "json",
                      before=None, timeout: float = 180.0, blast_with=None,
                      runtime: str = "auto", scrape: bool | None = None,
                      until_idle: bool = False, config: dict | None = None,
                      until_delivered: bool = False) -> tuple:
    """(samples per wall second, per CPU second, stats); ``fast_json=False``: stdlib json.

    ``payload``: the daemon's ``--payload``; ``before()`` runs once it has subscribed;
    ``blast_with(broker, files, qos)`` publishes instead of :func:`blast`; ``runtime``:
    the inference runtime (edge/runtime/). ``scrape=True``: with a metrics server, fetched every
    second while the messages flow (the scrape times go into ``stats["scrapes"]``);
    ``scrape=False``: no metrics server, the scraper's child process idle beside it.
    ``until_idle``: stop the clock when the worker has classified the last windows too.
    ``config``: more daemon settings. ``until_delivered``: then also wait until the broker
    has acknowledged every classification (QoS 1 outputs); ``stats["delivered_s"]`` is the
    time from the first message to that, ``stats["pending_at_idle"]`` what was still
    unacknowledged when the clock stopped.
    """
    from edge.config import load_config
    from edge.daemon import Daemon
    from edge.formats import Decoder
    from edge.payload import PayloadParser
    from tests.mqtt_helpers import free_port

    values = {"model": str(model), "broker": broker.url, "node": "bench", "qos": qos,
              "queue_size": 200000, "payload": payload, "runtime": runtime, **(config or {})}
    if scrape:
        values["metrics_port"] = free_port()
    cfg = load_config(values, env={})
    d = Daemon(cfg)
    if fast_json is not None:
        d.parser = Decoder("json", PayloadParser(d.slot.current.info.channels,
                                                 fast_json=fast_json))
    first = []
    handler = d.on_input

    def timed(msg, _h=handler):  # stamp the first message, then the daemon's own handler
        if not first:
            first.append((time.perf_counter(), time.process_time()))
        _h(msg)

    d.link.client.on_message = _guarded(timed)
    d.start()
    d.link.subscribed.wait(5)
    began = {t.native_id: thread_cpu_seconds(t.native_id) for t in threading.enumerate()}
    if before is not None:
        before()
    # scrape=False in a round that is compared with scraped ones: the same idle child.
    scraper = None if scrape is None else Scraper(
        f"http://127.0.0.1:{cfg.metrics_port}/metrics" if scrape else None)
    (blast_with or blast)(broker, files, qos)
    total = n * samples_per_msg
    deadline = time.monotonic() + timeout
    while d.stats.samples < total and time.monotonic() < deadline:
        time.sleep(0.002)
    # Every sample buffered and every window classified and handed to paho.
    while d.runner.queue and time.monotonic() < deadline:
        time.sleep(0.002)
    # The queue is empty as soon as the worker took the last items, and ``samples`` counts
    # them as they are pushed: the windows of that last cycle are classified (and counted)
    # after both. ``until_idle``: wait for the worker to finish it (it goes idle only with
    # an empty queue after a whole cycle).
    while until_idle and not d.runner._idle and time.monotonic() < deadline:
        time.sleep(0.0005)
    done = (time.perf_counter(), time.process_time())
    stats = d.stats.snapshot()
    stats["thread_cpu"] = {t.name: thread_cpu_seconds(t.native_id) - began.get(t.native_id, 0.0)
                           for t in threading.enumerate() if t.native_id in began}
    if until_delivered:
        stats["pending_at_idle"] = d.link.pending()
        while d.link.pending() and time.monotonic() < deadline:
            time.sleep(0.0005)
        stats["delivered_s"] = time.perf_counter() - first[0][0]
    if scraper is not None:
        scraper.stop()
    if scrape:
        stats["scrapes"] = scraper.times
        stats["scrape_bytes"] = scraper.sizes[-1]
        # CPU of one scrape's collection and formatting (the daemon idle now, all threads).
        from prometheus_client import generate_latest

        began = time.process_time()
        for _ in range(200):
            generate_latest(d.metrics.registry)
        stats["scrape_cpu_s"] = (time.process_time() - began) / 200
    d.stop()
    if d.stats.samples < total:
        raise RuntimeError(f"daemon buffered {d.stats.samples} of {total} samples: {stats}")
    return total / (done[0] - first[0][0]), total / (done[1] - first[0][1]), stats


def _guarded(fn):
    def on_message(client, userdata, msg):
        fn(msg)
    return on_message


def medians(runs: dict[str, list[tuple[float, float]]]) -> dict:
    """Per variant: the median wall and CPU rates of its rounds, and every wall rate."""
    med = statistics.median
    return {name: {"wall": med(v[0] for v in values), "cpu": med(v[1] for v in values),
                   "wall_all": [round(v[0]) for v in values]}
            for name, values in runs.items() if values}


def bench_throughput(broker, model, workdir, n, qos, rounds) -> dict:
    files = one_sample_files(workdir, n, 4, seed=0)
    runs = {"null": [], "daemon": [], "stdlib": [], "null_edge": []}
    last = None
    for _ in range(rounds):
        runs["null"].append(run_null(broker, files, n, qos))
        *rates, last = run_daemon_inproc(broker, model, files, n, qos)
        runs["daemon"].append(tuple(rates))
        if HAVE_ORJSON:  # else "daemon" is the stdlib run already
            runs["stdlib"].append(run_daemon_inproc(broker, model, files, n, qos,
                                                    fast_json=False)[:2])
        runs["null_edge"].append(run_null(broker, files, n, qos, edge_client=True))
    return {"qos": qos, "classifications": last["classifications"],
            "inferences": last["inferences"], "drops": last["drops"], **medians(runs)}


def bench_batches(broker, model, workdir, n_msgs, per_msg, rounds) -> dict:
    rng = np.random.default_rng(1)
    block = rng.normal(0, 1, (per_msg, 3)).round(4).tolist()
    files = pub_files(workdir, n_msgs, 10, lambda i: json.dumps({"samples": block}))
    runs = {"daemon": [], "stdlib": []}
    for _ in range(rounds):
        rate, cpu, stats = run_daemon_inproc(broker, model, files, n_msgs, 1,
                                             samples_per_msg=per_msg)
        runs["daemon"].append((rate, cpu))
        if HAVE_ORJSON:
            runs["stdlib"].append(run_daemon_inproc(broker, model, files, n_msgs, 1,
                                                    samples_per_msg=per_msg,
                                                    fast_json=False)[:2])
    return {"per_msg": per_msg, "messages": n_msgs, "windows": stats["windows"],
            "inferences": stats["inferences"], "batch_max": stats["batch_max"], **medians(runs)}


def bench_scrape(broker, model, workdir, n, rounds) -> dict:
    """Throughput with a 1 s /metrics scrape vs without (QoS 1), in pairs of rounds.

    The pairs alternate their order (plain first, then scraped first, ...) so a machine
    getting busier or quieter during the run does not favour one side; each pair's ratio
    compares two rounds a few seconds apart. Returns the medians, every round, and the
    median, lowest and highest of the per-pair ratios (wall and messages per CPU-second).
    """
    files = one_sample_files(workdir, n, 4, seed=2)
    runs = {"plain": [], "scraped": []}
    scrapes, cpu = [], []
    size = 0
    for i in range(rounds):
        for scraped in (False, True) if i % 2 == 0 else (True, False):
            *rates, stats = run_daemon_inproc(broker, model, files, n, 1, scrape=scraped)
            runs["scraped" if scraped else "plain"].append(tuple(rates))
            if scraped:
                scrapes += stats["scrapes"]
                cpu.append(stats["scrape_cpu_s"])
                size = stats["scrape_bytes"]
    med = statistics.median
    pairs = {k: [s[k] / p[k] for p, s in zip(runs["plain"], runs["scraped"], strict=True)]
             for k in (0, 1)}
    walls = [p[0] for p in runs["plain"]]
    return {"scrapes": len(scrapes), "scrape_ms": 1000 * med(scrapes),
            "scrape_cpu_ms": 1000 * med(cpu), "scrape_bytes": size,
            "pair_wall": (med(pairs[0]), min(pairs[0]), max(pairs[0])),
            "pair_cpu": (med(pairs[1]), min(pairs[1]), max(pairs[1])),
            "plain_spread": max(walls) / min(walls) - 1, **medians(runs)}


FORMATS = ("json", "binary", "cbor", "sparkplug")


def format_payloads(per_msg: int, seed: int = 2) -> tuple[np.ndarray, dict[str, bytes]]:
    """One message of ``per_msg`` samples x 3 channels in every format.

    Sparkplug B: metrics by alias (after a DBIRTH), no seq and no timestamps, like the JSON
    and binary forms.
    """
    import cbor2

    from edge import sparkplug
    from edge.payload_binary import encode_block

    block = np.random.default_rng(seed).normal(0, 1, (per_msg, 3)).round(4).astype(np.float32)
    return block, {
        "json": json.dumps({"samples": block.tolist()}).encode(),
        "binary": encode_block(block),
        "cbor": cbor2.dumps({"samples": block.tolist()}),
        "sparkplug": sparkplug.encode_samples(block, "xyz", aliases={"x": 1, "y": 2, "z": 3})}


def mqtt_publish_packets(messages: list[tuple[str, bytes]]) -> bytes:
    """QoS 0 PUBLISH packets (MQTT 3.1.1 framing) of ``(topic, payload)``, back to back."""
    out = []
    for topic, payload in messages:
        t = topic.encode()
        body = len(t).to_bytes(2, "big") + t
        out += [b"\x30", _remaining_length(len(body) + len(payload)), body, payload]
    return b"".join(out)


class RawBlast:
    """A publisher that is not the bottleneck: pre-encoded QoS 0 PUBLISH packets.

    Every format of [7] goes through it (blocks, CBOR and protobuf hold NUL and newline
    bytes, so ``mosquitto_pub -l`` cannot send them). One child process (this script with
    ``--publish``) connects a plain socket (MQTT 3.1.1 CONNECT, waits for the CONNACK),
    says "ready", waits for the go and writes the packets, all encoded here beforehand, with
    ``sendall`` in 256 kB slices; then DISCONNECT. No client library, no per-message work
    in the sender: about a second of one core per GB, so the broker and the daemon set the
    rate.
    """

    def __init__(self, broker: Broker, workdir: Path, messages: list[tuple[str, bytes]],
                 ticks: list[int] | None = None):
        path = workdir / "blast.mqtt"
        path.write_bytes(mqtt_publish_packets(messages))
        paced = []
        if ticks is not None:  # message i goes out at PACE_TICK_S * ticks[i] (non-decreasing)
            ends, size = {}, 0
            for (topic, payload), tick in zip(messages, ticks, strict=True):
                size += len(mqtt_publish_packets([(topic, payload)]))
                ends[tick] = size
            plan = workdir / "blast.ticks"
            plan.write_text(json.dumps(sorted(ends.items())))
            paced = [str(plan)]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--publish", broker.host, str(broker.port), str(path),
             *paced], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the publisher did not connect")

    def __call__(self, *_args) -> None:
        began = time.perf_counter()
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        if self.proc.wait(120) != 0:
            raise RuntimeError("the publisher failed")
        self.seconds = time.perf_counter() - began  # until the broker had read it all


def publish_main(host: str, port: str, path: str, plan: str | None = None) -> int:
    """``--publish``: the child side of :class:`RawBlast` (``plan``: its paced schedule)."""
    import socket

    packets = Path(path).read_bytes()
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    client_id = f"bench-raw-{os.getpid()}".encode()
    body = (b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id)
    sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
    connack = b""
    while len(connack) < 4:
        chunk = sock.recv(4 - len(connack))
        if not chunk:
            return 1
        connack += chunk
    if connack[0] != 0x20 or connack[3] != 0:
        print(f"CONNACK refused: {connack!r}", flush=True)
        return 1
    print("ready", flush=True)
    sys.stdin.readline()
    view = memoryview(packets)
    if plan is not None:  # [(tick, bytes up to the end of that tick's messages), ...]
        began, lo = time.perf_counter(), 0
        for tick, hi in json.loads(Path(plan).read_text()):
            delay = began + tick * PACE_TICK_S - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sock.sendall(view[lo:hi])
            lo = hi
    step = 256 * 1024
    for lo in range(0, len(view) if plan is None else 0, step):
        sock.sendall(view[lo:lo + step])
    sock.sendall(b"\xe0\x00")  # DISCONNECT: the broker delivers everything before it
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)  # the broker closes once it has read it all
    sock.close()
    return 0


def broker_ceiling(broker: Broker, qos: int, n: int, payload: bytes) -> tuple[float, float]:
    """What mosquitto alone takes: ``n`` PUBLISH packets of ``payload`` (QoS 0 or 1, ten
    topics) written by one raw-socket client in 64 kB sends, no subscriber; at QoS 1 until
    every PUBACK is back (read by a second thread), at QoS 0 until the broker closes after
    the DISCONNECT. Returns (publishes a second, broker CPU seconds a publish)."""
    import socket

    packets = []
    for i in range(n):
        topic = f"edge/dev{i % 10}/classification".encode()
        mid = (i % 65535 + 1).to_bytes(2, "big") if qos else b""
        body = len(topic).to_bytes(2, "big") + topic + mid + payload
        packets += [bytes([0x30 | qos << 1]), _remaining_length(len(body)), body]
    view = memoryview(b"".join(packets))
    sock = socket.create_connection((broker.host, broker.port))
    client_id = f"bench-ceiling-{time.monotonic_ns()}".encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
    if sock.recv(4)[:1] != b"\x20":
        raise RuntimeError("the broker refused the connection")
    acked = [0]

    def read_acks():  # 4 bytes a PUBACK
        while acked[0] < 4 * n and (chunk := sock.recv(1 << 20)):
            acked[0] += len(chunk)

    reader = threading.Thread(target=read_acks)
    cpu0, began = cpu_seconds(broker.proc.pid), time.perf_counter()
    if qos:
        reader.start()
    for lo in range(0, len(view), 65536):
        sock.sendall(view[lo:lo + 65536])
    if qos:
        reader.join(120)
    else:
        sock.sendall(b"\xe0\x00")
        sock.recv(1)
    wall = time.perf_counter() - began
    cpu = cpu_seconds(broker.proc.pid) - cpu0
    sock.close()
    return n / wall, cpu / n


def decode_rate(fmt: str, payload: bytes, model: Path, seconds: float = 1.0) -> float:
    """Samples/s of the network thread's decoding alone (the daemon's own decoder)."""
    from edge.config import load_config
    from edge.daemon import make_parser
    from edge.models import load_model

    cfg = load_config({"model": str(model), "payload": fmt}, env={})
    parser = make_parser(load_model(str(model)), cfg)
    if fmt == "sparkplug":
        from edge import sparkplug

        parser.handle("spBv1.0/b/DBIRTH/n/d", sparkplug.birth("xyz", {"x": 1, "y": 2, "z": 3}))
        call, args = parser.handle, ("spBv1.0/b/DDATA/n/d", payload)
    else:
        call, args = parser.parse, (payload,)
    n, samples = 0, len(call(*args)[-1][1]) if fmt == "sparkplug" else len(call(*args)[0])
    start = time.process_time()
    while time.process_time() - start < seconds:
        for _ in range(100):
            call(*args)
        n += 100
    return n * samples / (time.process_time() - start)


def bench_formats(broker, model, workdir, n_msgs, per_msg, rounds) -> dict:
    """Samples/s of batch messages in each payload format, alternating rounds, one broker."""
    from edge import sparkplug

    _, payloads = format_payloads(per_msg)
    devices = 10
    topics = {"sparkplug": "spBv1.0/bench/DDATA/node{d}/dev{d}"}
    runs = {fmt: [] for fmt in FORMATS}
    stats = {}

    def births():
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.connect(broker.host, broker.port)
        client.loop_start()
        birth = sparkplug.birth("xyz", {"x": 1, "y": 2, "z": 3})
        for info in [client.publish(f"spBv1.0/bench/DBIRTH/node{d}/dev{d}", birth, qos=1)
                     for d in range(devices)]:
            info.wait_for_publish(5)
        client.disconnect()
        client.loop_stop()

    broker_cpu = {fmt: [] for fmt in FORMATS}
    pub_share = {fmt: [] for fmt in FORMATS}
    threads = {fmt: {} for fmt in FORMATS}  # "paho" (network) / "sigmoid" (worker) CPU a msg
    # Samples/s until the broker had acknowledged every classification, and how many were
    # still unacknowledged when the worker went idle (where the main rate stops the clock).
    delivered = {fmt: [] for fmt in FORMATS}
    runs["receive_only"] = []
    runs["binary_hop3200"] = []
    for _ in range(rounds):
        for fmt in FORMATS:
            topic = topics.get(fmt, "sensors/dev{d}/a")
            messages = [(topic.format(d=i % devices), payloads[fmt]) for i in range(n_msgs)]
            blaster = RawBlast(broker, workdir, messages)
            began = cpu_seconds(broker.proc.pid)
            # Every classification is published (no max_pending_outputs bound): the whole way.
            rate, cpu, stats[fmt] = run_daemon_inproc(
                broker, model, None, n_msgs, 1, samples_per_msg=per_msg, payload=fmt,
                before=births if fmt == "sparkplug" else None, blast_with=blaster,
                until_idle=True, config={"max_pending_outputs": 10**9}, until_delivered=True)
            broker_cpu[fmt].append((cpu_seconds(broker.proc.pid) - began) / n_msgs)
            # Share of the round the publisher took (the broker had read every message then).
            pub_share[fmt].append(blaster.seconds * rate / (n_msgs * per_msg))
            for name, seconds in stats[fmt]["thread_cpu"].items():
                if name.startswith(("paho", "sigmoid-edge-worker")):
                    threads[fmt].setdefault(name.split("-")[0], []).append(seconds / n_msgs)
            runs[fmt].append((rate, cpu))
            delivered[fmt].append((n_msgs * per_msg / stats[fmt]["delivered_s"],
                                   stats[fmt]["pending_at_idle"]))
        # Binary with 1% of the windows (hop 3200): what the classifications cost.
        messages = [(f"sensors/dev{i % devices}/a", payloads["binary"]) for i in range(n_msgs)]
        rate, cpu, few = run_daemon_inproc(
            broker, model, None, n_msgs, 1, samples_per_msg=per_msg, payload="binary",
            blast_with=RawBlast(broker, workdir, messages), until_idle=True,
            config={"max_pending_outputs": 10**9, "hop": 3200})
        runs["binary_hop3200"].append((rate, cpu))
        stats["binary_hop3200"] = few
        # The receive path alone: the daemon's MQTT client taking the binary messages and
        # doing nothing with them (what bounds any daemon built on it).
        wall, cpu = run_null(broker, None, n_msgs, 0, edge_client=True, loads=len,
                             blast_with=RawBlast(broker, workdir, messages))
        runs["receive_only"].append((wall * per_msg, cpu * per_msg))
    decode = {fmt: decode_rate(fmt, payloads[fmt], model) for fmt in FORMATS}
    # The broker alone, for classifications of this size: its ceiling on this machine.
    output = json.dumps({"device": "dev1", "label": "a", "confidence": 0.592236,
                         "probabilities": {"a": 0.394941, "b": 0.592236, "c": 0.011505,
                                           "d": 0.001318}, "window_start": 1764382000.0,
                         "window_end": 1764382000.63, "model": "bench@1"}).encode()
    ceiling = {qos: [broker_ceiling(broker, qos, 50000, output) for _ in range(rounds)]
               for qos in (1, 0)}
    return {"per_msg": per_msg, "messages": n_msgs, "decode": decode,
            "bytes": {fmt: len(p) for fmt, p in payloads.items()},
            "windows": {fmt: st["windows"] for fmt, st in stats.items()},
            "output_drops": {fmt: st["output_drops"] for fmt, st in stats.items()},
            "broker_us": {fmt: 1e6 * statistics.median(v) for fmt, v in broker_cpu.items()},
            "publisher_share": {fmt: statistics.median(v) for fmt, v in pub_share.items()},
            "network_us": {fmt: 1e6 * statistics.median(t.get("paho", [0]))
                           for fmt, t in threads.items()},
            "worker_us": {fmt: 1e6 * statistics.median(t.get("sigmoid", [0]))
                          for fmt, t in threads.items()},
            "delivered": {fmt: statistics.median(r for r, _ in v) for fmt, v in delivered.items()},
            "pending_at_idle": {fmt: statistics.median(p for _, p in v)
                                for fmt, v in delivered.items()},
            "broker_ceiling": {qos: (statistics.median(r for r, _ in v),
                                     1e6 * statistics.median(c for _, c in v))
                               for qos, v in ceiling.items()},
            **medians(runs)}


def start_daemon(broker, model, *args) -> tuple[subprocess.Popen, float]:
    """Start `python -m edge run`; return it and the seconds until `online` arrived."""
    got = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_message = lambda cl, u, m: m.payload == b"online" and got.set()
    c.connect(broker.host, broker.port)
    c.loop_start()
    ready = threading.Event()
    c.on_subscribe = lambda *a: ready.set()
    c.subscribe("sigmoid-edge/bench/status", 1)
    ready.wait(5)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--model", str(model),
                             "--broker", broker.url, "--node", "bench", "--log-level",
                             "warning", *args], env=env, cwd=ROOT)
    if not got.wait(30):
        proc.kill()
        raise RuntimeError("daemon did not come online")
    took = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return proc, took


def stop_daemon(proc) -> None:
    proc.terminate()
    proc.wait(10)


def cpu_seconds(pid: int, stat: str = "/proc/{pid}/stat") -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(stat.format(pid=pid)).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(tid: int) -> float:
    """User + system CPU time of one thread of this process so far (0 once it is gone)."""
    try:
        return cpu_seconds(tid, "/proc/self/task/{pid}/stat")
    except OSError:
        return 0.0


def run_daemon_procs(broker, model, files, shards: list[str | None], expect,
                     send=None) -> dict:
    """Start one daemon per shard, blast ``files``, wait until each has counted ``expect[i]``
    messages (owned + not_mine) in its stats; per daemon: CPU s, stats; and the wall time.
    ``send()``: publishes instead of the blast of ``files``."""
    # Fresh node names: stats are retained, so an earlier run's must not count as this one's.
    nodes = [f"shards{time.monotonic_ns()}-{i}" for i in range(len(shards))]
    latest: dict[str, dict] = {}
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: latest.__setitem__(m.topic.split("/")[1],
                                                        json.loads(m.payload))
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    sub.subscribe("sigmoid-edge/+/stats", 0)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = []
    for node, shard in zip(nodes, shards, strict=True):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--model", str(model), "--broker", broker.url,
             "--node", node, "--log-level", "warning", "--stats-interval", "0.2",
             "--queue-size", "200000", *(["--shard", shard] if shard else [])],
            env=env, cwd=ROOT))
    try:
        deadline = time.monotonic() + 60
        while not all(n in latest for n in nodes) and time.monotonic() < deadline:
            time.sleep(0.05)
        # What each daemon spends with no input at all (stats publishing, timers, paho's
        # keepalive), per second: a cost of time, not of messages.
        idle0, began = [cpu_seconds(p.pid) for p in procs], time.perf_counter()
        time.sleep(IDLE_S)
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        idle = [(c - c0) / (time.perf_counter() - began) for c, c0 in zip(cpu0, idle0,
                                                                          strict=True)]
        t0 = time.perf_counter()
        if send is None:
            blast(broker, files, 0)
        else:
            send()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and any(
                latest[n]["messages_in"] < e or latest[n]["queue_depth"]
                for n, e in zip(nodes, expect, strict=True)):
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        cpu = [cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]
        return {"wall": wall, "cpu": cpu, "idle": idle, "stats": [latest[n] for n in nodes]}
    finally:
        for p in procs:
            stop_daemon(p)
        sub.disconnect()
        sub.loop_stop()


def bench_shards(broker, model, workdir, n, rounds) -> dict:
    """One daemon vs two --shard daemons on one-sample JSON from 20 devices (QoS 0)."""
    import zlib

    devices = 20
    files = one_sample_files(workdir, n, devices, seed=2)
    owner = [zlib.crc32(f"dev{d}".encode()) % 2 for d in range(devices)]
    others = [f for f, o in zip(files, owner, strict=True) if o == 1]
    n_others = len(others) * (n // devices)
    single, pair, alien = [], [], []
    # Paced, differential: shard 0 fed the whole stream at PACED_RATE messages a second, and
    # the same schedule with only its own devices' messages; the CPU the first takes beyond
    # the second is what the other shard's messages cost it, wake-ups shared with its own
    # messages included (the rounds above charge every wake-up to the other shard's).
    # Every device once a cycle, in an order shuffled per cycle: a tick's few messages are
    # sometimes all the other shard's, as with sensors that do not publish in lockstep.
    lines = [path.read_text().splitlines() for _, path in files]
    rng = np.random.default_rng(3)
    stream = [(files[d][0], lines[d][i].encode()) for i in range(n // devices)
              for d in rng.permutation(devices).tolist()]
    per_tick = PACED_RATE * PACE_TICK_S
    ticks = [int(i // per_tick) for i in range(len(stream))]
    own = [i for i, (topic, _) in enumerate(stream) if owner[int(topic.split("/")[1][3:])] == 0]
    paced_mixed, paced_own = [], []
    for k in range(rounds):
        single.append(run_daemon_procs(broker, model, files, [None], [n]))
        pair.append(run_daemon_procs(broker, model, files, ["0/2", "1/2"], [n, n]))
        # Only the messages shard 0 does not own: what they cost it.
        alien.append(run_daemon_procs(broker, model, others, ["0/2"], [n_others]))
        for mixed in ((True, False) if k % 2 == 0 else (False, True)):
            picked = range(len(stream)) if mixed else own
            send = RawBlast(broker, workdir, [stream[i] for i in picked],
                            [ticks[i] for i in picked])
            run = run_daemon_procs(broker, model, None, ["0/2"],
                                   [len(stream) if mixed else len(own)], send=send)
            (paced_mixed if mixed else paced_own).append(run)
    med = statistics.median
    one_cpu_per_msg = med(r["cpu"][0] / n for r in single)
    alien_cpu_per_msg = med(r["cpu"][0] / n_others for r in alien)
    # The same, less what the daemon spends per second with no input at all.
    alien_net_per_msg = med(max(r["cpu"][0] - r["idle"][0] * r["wall"], 0.0) / n_others
                            for r in alien)
    out = {"messages": n, "devices": devices,
           "single_rate": med(n / r["wall"] for r in single),
           "pair_rate": med(n / r["wall"] for r in pair),
           "single_cpu_per_msg_us": one_cpu_per_msg * 1e6,
           "not_mine_cpu_per_msg_us": alien_cpu_per_msg * 1e6,
           "not_mine_net_cpu_per_msg_us": alien_net_per_msg * 1e6,
           "idle_cpu_share": med(r["idle"][0] for r in alien),
           "classifications": [r["stats"][0]["classifications"] for r in single][-1:]
           + [sum(s["classifications"] for s in r["stats"]) for r in pair][-1:]}
    per_owned, share_alien, share_net = [], [], []
    for k in range(2):
        owned = med(r["stats"][k]["messages_in"] - r["stats"][k]["not_mine"] for r in pair)
        cpu = med(r["cpu"][k] for r in pair)
        per_owned.append(cpu / owned * 1e6)
        share_alien.append(alien_cpu_per_msg * (n - owned) / cpu)
        share_net.append(alien_net_per_msg * (n - owned) / cpu)
    out["pair_cpu_per_owned_msg_us"] = per_owned
    out["pair_share_of_cpu_on_other_shards"] = share_alien
    out["pair_share_net"] = share_net
    mixed_cpu = [r["cpu"][0] for r in paced_mixed]
    own_cpu = [r["cpu"][0] for r in paced_own]
    out["paced"] = {"rate": PACED_RATE, "messages": len(stream), "own": len(own),
                    "mixed_cpu_s": mixed_cpu, "own_cpu_s": own_cpu,
                    "mixed_wall_s": [r["wall"] for r in paced_mixed],
                    "share": 1 - med(own_cpu) / med(mixed_cpu),
                    "shares": [1 - o / m for m, o in zip(mixed_cpu, own_cpu, strict=True)],
                    "foreign_us": (med(mixed_cpu) - med(own_cpu)) / (len(stream) - len(own))
                    * 1e6}
    return out


def bench_startup(broker, model, rounds) -> dict:
    times = []
    for _ in range(rounds):
        # Clear the retained status so each round waits for a fresh `online`.
        proc, took = start_daemon(broker, model)
        times.append(took)
        stop_daemon(proc)
    return {"median_s": statistics.median(times), "all": times}


def bench_latency(broker, model, seconds, rate=1000, devices=100) -> dict:
    proc, _ = start_daemon(broker, model)
    rss_start = rss_bytes(proc.pid) / 2**20
    lat = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)

    def on_message(client, userdata, msg):
        now = time.time()
        lat.append(now - json.loads(msg.payload)["window_end"])

    sub.on_message = on_message
    ready = threading.Event()
    sub.on_subscribe = lambda *a: ready.set()
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    sub.subscribe("edge/+/classification", 1)
    ready.wait(5)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    n = int(seconds * rate)
    t0 = time.perf_counter()
    for i in range(n):
        target = t0 + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        d = i % devices
        pub.publish(f"sensors/d{d}/a", json.dumps({"x": 0.5, "y": 0.1, "z": -0.2,
                                                   "ts": time.time()}), qos=1)
    achieved = n / (time.perf_counter() - t0)
    time.sleep(1.0)
    rss_end = rss_bytes(proc.pid) / 2**20
    stop_daemon(proc)
    pub.disconnect()
    pub.loop_stop()
    sub.disconnect()
    sub.loop_stop()
    ms = np.array(lat) * 1000
    return {"rate": achieved, "classifications": len(ms),
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()), "over_10ms": float((ms > 10).mean()),
            "rss_start_mb": rss_start, "rss_end_mb": rss_end}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--only", choices=("throughput", "batches", "formats", "startup", "latency",
                                       "shards", "scrape"),
                    action="append", help="run only these parts (repeatable)")
    ap.add_argument("--latency-seconds", type=float, help="length of the latency run")
    ap.add_argument("--rounds", type=int, help="rounds per comparison (default 3; quick: 1)")
    args = ap.parse_args()
    parts = set(args.only or ("throughput", "batches", "formats", "startup", "latency",
                              "scrape"))
    quick = args.quick
    import onnxruntime

    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"machine: {os.cpu_count()} cores {platform.machine()}, Python "
          f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}, paho-mqtt "
          f"{metadata.version('paho-mqtt')}, orjson "
          f"{metadata.version('orjson') if HAVE_ORJSON else '(not installed)'}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        broker = Broker(tmp / "broker", config=BROKER_CONF).start()
        try:
            model = mean_model(tmp / "model.onnx", window=64, hop=32, sample_rate_hz=100.0,
                               name="bench", labels=("a", "b", "c", "d"))
            lat_model = mean_model(tmp / "lat.onnx", window=16, hop=8, sample_rate_hz=10.0,
                                   name="bench-lat", labels=("a", "b", "c", "d"))
            n = 20000 if quick else 100000
            rounds = args.rounds or (1 if quick else 3)
            results = {}
            for qos in (0, 1) if "throughput" in parts else ():
                r = bench_throughput(broker, model, tmp, n, qos, rounds)
                results[f"throughput_qos{qos}"] = r
                null = r["null"]
                print(f"[1] one-sample JSON, QoS {qos}, {n} msgs from 4 mosquitto_pub -l, "
                      f"median of {rounds} alternating rounds; {r['classifications']} windows "
                      f"in {r['inferences']} inferences, drops {r['drops']}")
                names = {"null": "null paho subscriber (json.loads)",
                         "daemon": "daemon as installed" + (" (orjson)" if HAVE_ORJSON else ""),
                         "stdlib": "daemon, stdlib json only",
                         "null_edge": "null subscriber on edge.mqtt's client"}
                for name, title in names.items():
                    if name in r:
                        v = r[name]
                        print(f"    {title:>38}: {v['wall']:8,.0f} msg/s wall "
                              f"({v['wall'] / null['wall']:.2f}x), {v['cpu']:8,.0f} msg per "
                              f"CPU-s ({v['cpu'] / null['cpu']:.2f}x); rounds {v['wall_all']}",
                              flush=True)
            b = bench_batches(broker, model, tmp, 500 if quick else 3000, 100, rounds) \
                if "batches" in parts else None
            results["batches"] = b
            if b:
                print(f"[2] batch payloads of {b['per_msg']} samples, {b['messages']} msgs, "
                      f"10 devices, median of {rounds} rounds (goal >= 500k samples/s); "
                      f"{b['windows']} windows in {b['inferences']} inferences, largest batch "
                      f"{b['batch_max']}", flush=True)
                for name, title in (("daemon", "as installed"), ("stdlib", "stdlib json only")):
                    if name in b:
                        v = b[name]
                        print(f"    {title:>17}: {v['wall']:9,.0f} samples/s wall, "
                              f"{v['cpu']:9,.0f} per CPU-s; rounds {v['wall_all']}", flush=True)
            if "scrape" in parts:
                sc = bench_scrape(broker, model, tmp, n, args.rounds or (4 if quick else 8))
                results["scrape"] = sc
                ratio = sc["scraped"]["wall"] / sc["plain"]["wall"]
                pw, pc = sc["pair_wall"], sc["pair_cpu"]
                print(f"[8] /metrics every 1 s while {n} one-sample msgs flow (QoS 1), "
                      f"{len(sc['plain']['wall_all'])} pairs of rounds in alternating order "
                      f"(goal >= 0.97x):\n"
                      f"    without {sc['plain']['wall']:,.0f} msg/s, with "
                      f"{sc['scraped']['wall']:,.0f} msg/s (medians: {ratio:.3f}x); rounds "
                      f"without {sc['plain']['wall_all']}, with {sc['scraped']['wall_all']}; "
                      f"identical rounds without a scrape spread by {sc['plain_spread']:.0%}\n"
                      f"    per pair, with / without: wall median {pw[0]:.3f}x (lowest "
                      f"{pw[1]:.3f}x, highest {pw[2]:.3f}x), msgs per CPU-s median {pc[0]:.3f}x "
                      f"({pc[1]:.3f}x to {pc[2]:.3f}x)\n"
                      f"    {sc['scrapes']} scrapes of {sc['scrape_bytes']} bytes, median "
                      f"{sc['scrape_ms']:.1f} ms each; {sc['scrape_cpu_ms']:.2f} ms CPU to "
                      f"collect and format one (= {sc['scrape_cpu_ms'] / 10:.3f}% of a core at "
                      "one scrape a second)", flush=True)
            if "shards" in parts:
                sh = bench_shards(broker, model, tmp, 20000 if quick else 100000, rounds)
                results["shards"] = sh
                print(f"[6] shards: {sh['messages']} one-sample msgs from {sh['devices']} "
                      f"devices, QoS 0, daemons as processes, median of {rounds} rounds; "
                      f"classifications (one, two) {sh['classifications']}\n"
                      f"    one daemon: {sh['single_rate']:8,.0f} msg/s, "
                      f"{sh['single_cpu_per_msg_us']:.1f} us CPU per message\n"
                      f"    two shards: {sh['pair_rate']:8,.0f} msg/s summed "
                      f"({sh['pair_rate'] / sh['single_rate']:.2f}x), CPU per owned message "
                      + ", ".join(f"{x:.1f} us ({x / sh['single_cpu_per_msg_us']:.2f}x)"
                                  for x in sh["pair_cpu_per_owned_msg_us"]) + "\n"
                      f"    another shard's message costs {sh['not_mine_cpu_per_msg_us']:.1f} "
                      "us; share of each shard daemon's CPU on them (goal < 10%): "
                      + ", ".join(f"{x:.1%}" for x in sh["pair_share_of_cpu_on_other_shards"])
                      + f"\n    less the idle daemon's own CPU ({sh['idle_cpu_share']:.2%} of a "
                      f"core with no input): {sh['not_mine_net_cpu_per_msg_us']:.1f} us, share "
                      + ", ".join(f"{x:.1%}" for x in sh["pair_share_net"]), flush=True)
                pc = sh["paced"]
                print(f"    paced at {pc['rate']:,} msg/s, shard 0 alone: the whole stream "
                      f"({pc['messages']} msgs) {statistics.median(pc['mixed_cpu_s']):.3f} s "
                      f"CPU, its own {pc['own']} only "
                      f"{statistics.median(pc['own_cpu_s']):.3f} s; share of its CPU on the "
                      f"other shard's messages (goal < 10%): {pc['share']:.1%} (rounds "
                      + ", ".join(f"{x:.1%}" for x in pc["shares"]) + f"), "
                      f"{pc['foreign_us']:.1f} us a message", flush=True)
            f = bench_formats(broker, model, tmp, 500 if quick else 10000, 100, rounds) \
                if "formats" in parts else None
            results["formats"] = f
            if f:
                json_rate = f["json"]["wall"]
                print(f"[7] payload formats, {f['per_msg']} samples x 3 channels a message, "
                      f"{f['messages']} msgs, 10 devices, median of {rounds} alternating rounds "
                      f"(goals: binary >= 3M samples/s and >= 4x json; sparkplug >= json)",
                      flush=True)
                for fmt in FORMATS:
                    v = f[fmt]
                    dec = f["decode"][fmt]
                    print(f"    {fmt:>10} ({f['bytes'][fmt]:5} B): {v['wall']:10,.0f} samples/s "
                          f"wall ({v['wall'] / json_rate:.2f}x json), {v['cpu']:10,.0f} per "
                          f"CPU-s; {f['windows'][fmt]} windows ({f['output_drops'][fmt]} not "
                          f"published); rounds {v['wall_all']}; "
                          f"decoding alone {dec:11,.0f} samples per CPU-s "
                          f"({dec / f['decode']['json']:.2f}x json); CPU a message: network "
                          f"thread {f['network_us'][fmt]:.0f} us, worker {f['worker_us'][fmt]:.0f}"
                          f" us, broker {f['broker_us'][fmt]:.0f} us; the publisher was done "
                          f"after {f['publisher_share'][fmt]:.0%} of the round; every "
                          f"classification acknowledged by the broker: "
                          f"{f['delivered'][fmt]:,.0f} samples/s "
                          f"({f['pending_at_idle'][fmt]:,.0f} still unacknowledged when the "
                          "worker went idle)", flush=True)
                v = f["binary_hop3200"]
                print(f"    binary, hop 3200 ({f['windows']['binary_hop3200']} windows, 1% of "
                      f"the above): {v['wall']:,.0f} samples/s wall, {v['cpu']:,.0f} per CPU-s; "
                      f"rounds {v['wall_all']}", flush=True)
                v = f["receive_only"]
                print(f"    receive only (binary messages into the daemon's MQTT client, nothing "
                      f"done with them): {v['wall']:,.0f} samples/s wall, {v['cpu']:,.0f} per "
                      f"CPU-s; rounds {v['wall_all']}", flush=True)
                (q1, c1), (q0, c0) = f["broker_ceiling"][1], f["broker_ceiling"][0]
                windows = f["windows"]["binary"] / f["messages"]
                print(f"    the broker alone, classification-sized publishes from one raw "
                      f"client: QoS 1 {q1:,.0f}/s acknowledged ({c1:.1f} us of its CPU each), "
                      f"QoS 0 {q0:,.0f}/s ({c0:.1f} us); 3M samples/s here would be "
                      f"{3e6 / f['per_msg'] * windows:,.0f} classifications/s", flush=True)
            if "startup" in parts:
                s = bench_startup(broker, model, 2 if quick else 5)
                print(f"[5] start to subscribed (online): median {s['median_s']:.2f} s "
                      f"(goal <= 1.5 s); all {[round(x, 2) for x in s['all']]}", flush=True)
            if "latency" not in parts:
                print(f"load average after: {os.getloadavg()[0]:.2f}")
                return 0
            lat = bench_latency(broker, lat_model, args.latency_seconds or (5 if quick else 30))
            print(f"[3] latency at {lat['rate']:.0f} msg/s over 100 devices: p50 "
                  f"{lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms (goal <= 10 ms), max "
                  f"{lat['max_ms']:.1f} ms over {lat['classifications']} classifications, "
                  f"{lat['over_10ms']:.1%} over 10 ms",
                  flush=True)
            print(f"load average after: {os.getloadavg()[0]:.2f}")
            print(f"[4] RSS of the daemon process: {lat['rss_start_mb']:.1f} MB at start, "
                  f"{lat['rss_end_mb']:.1f} MB after the latency run (goal <= 75 MB)")
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--scrape"]:
        raise SystemExit(scrape_main(*sys.argv[2:4]))
    if sys.argv[1:2] == ["--publish"]:
        raise SystemExit(publish_main(*sys.argv[2:6]))
    raise SystemExit(main())
