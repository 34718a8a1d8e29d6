"""Soak: run ``sigmoid-edge run`` at a steady 1k msg/s for a while and watch its memory.

    python bench/soak.py --minutes 10          # the recorded run (BENCHMARKS.md)
    python bench/soak.py --quick               # 30 s smoke run

The daemon is a real process on a real mosquitto; a paho publisher sends one-sample JSON
messages (no ``ts``: the daemon stamps them on arrival) at ``--rate`` msg/s spread over
``--devices`` devices, QoS 1. Every ``--sample`` seconds the daemon's RSS
(``/proc/PID/status``) and its ``stats`` (queue depth, drops) are recorded. After the first
``--warmup`` seconds (allocator and onnxruntime arenas settle), RSS growth is the
least-squares slope over the remaining samples, in MB per hour. Goal: <= 5 MB/h and no
backlog: the queue is empty at the end, nothing was dropped, and every window the published
samples complete was classified.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from edge.stats import rss_bytes  # noqa: E402
from tests.models import mean_model  # noqa: E402
from tests.mqtt_helpers import Broker  # noqa: E402

BROKER_CONF = "max_queued_messages 0\nmax_inflight_messages 0\nset_tcp_nodelay true\n"
WINDOW, HOP = 16, 8


def client(broker: Broker) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def soak(seconds: float, rate: float, devices: int, sample_s: float, warmup_s: float,
         extra: tuple[str, ...] = ()) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        broker = Broker(tmp / "broker", config=BROKER_CONF).start()
        model = mean_model(tmp / "soak.onnx", window=WINDOW, hop=HOP,
                           sample_rate_hz=rate / devices, name="soak",
                           labels=("a", "b", "c", "d"))
        received = [0]
        stats: list[dict] = []
        online = threading.Event()
        sub = client(broker)

        def on_message(c, u, msg):
            if msg.topic.endswith("/stats"):
                stats.append(json.loads(msg.payload))
            elif msg.topic.endswith("/status"):
                if msg.payload == b"online":
                    online.set()
            else:
                received[0] += 1

        sub.on_message = on_message
        sub.subscribe([("edge/+/classification", 1), ("sigmoid-edge/soak/#", 1)])
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--model", str(model), "--broker",
             broker.url, "--node", "soak", "--log-level", "warning",
             "--stats-interval", str(sample_s), *extra], env=env, cwd=ROOT)
        try:
            if not online.wait(30):
                raise RuntimeError("daemon did not come online")
            pub = client(broker)
            samples: list[tuple[float, float]] = []
            n = int(seconds * rate)
            t0 = time.perf_counter()
            next_sample = 0.0
            payload = json.dumps({"x": 0.5, "y": 0.1, "z": -0.2})
            for i in range(n):
                target = i / rate
                now = time.perf_counter() - t0
                if now >= next_sample:
                    samples.append((now, rss_bytes(proc.pid) / 2**20))
                    next_sample += sample_s
                if target > now:
                    time.sleep(target - now)
                # No "ts": on a loaded machine a stalled publisher would leave gaps in its
                # own timestamps, and the daemon rightly restarts windows across gaps.
                pub.publish(f"sensors/d{i % devices}/a", payload, qos=1)
            elapsed = time.perf_counter() - t0
            per_device = n // devices
            expected = devices * ((per_device - WINDOW) // HOP + 1)
            deadline = time.monotonic() + 30
            while received[0] < expected and time.monotonic() < deadline:
                time.sleep(0.1)
            samples.append((time.perf_counter() - t0, rss_bytes(proc.pid) / 2**20))
            pub.disconnect()
            pub.loop_stop()
            time.sleep(sample_s + 0.5)  # one more stats message after the last input
        finally:
            proc.terminate()
            proc.wait(10)
            sub.disconnect()
            sub.loop_stop()
            broker.stop()
    t = np.array([s[0] for s in samples])
    mb = np.array([s[1] for s in samples])
    steady = t >= min(warmup_s, t[-1] / 2)
    slope = float(np.polyfit(t[steady], mb[steady], 1)[0]) * 3600 if steady.sum() > 2 else None
    last = stats[-1] if stats else {}
    return {"seconds": elapsed, "rate": n / elapsed, "messages": n, "expected": expected,
            "received": received[0], "rss_first": float(mb[0]),
            "rss_after_warmup": float(mb[steady][0]), "rss_last": float(mb[-1]),
            "rss_max": float(mb.max()), "slope_mb_per_h": slope,
            "queue_depth_max": max((s.get("queue_depth", 0) for s in stats), default=None),
            "queue_depth_end": last.get("queue_depth"), "drops": last.get("drops"),
            "gaps": last.get("gaps"),
            "messages_in": last.get("messages_in"), "latency_ms": last.get("latency_ms")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to publish")
    ap.add_argument("--rate", type=float, default=1000.0, help="messages per second")
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--sample", type=float, default=10.0, help="RSS/stats period (s)")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the slope")
    ap.add_argument("--client-id", help="run the daemon with this client id (with QoS 1: a "
                    "persistent session with manual acknowledgements)")
    ap.add_argument("--quick", action="store_true", help="30 s smoke run")
    args = ap.parse_args()
    seconds = 30.0 if args.quick else args.minutes * 60
    sample = 2.0 if args.quick else args.sample
    warmup = 10.0 if args.quick else args.warmup
    import onnxruntime

    print(f"machine: {os.cpu_count()} cores {platform.machine()}, Python "
          f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    extra = ("--client-id", args.client_id, "--qos", "1") if args.client_id else ()
    r = soak(seconds, args.rate, args.devices, sample, warmup, extra)
    ok_rss = r["slope_mb_per_h"] is not None and r["slope_mb_per_h"] <= 5.0
    ok_backlog = (r["received"] >= r["expected"] and not r["drops"]
                  and r["queue_depth_end"] == 0)
    print(f"soak: {r['messages']} msgs in {r['seconds']:.0f} s ({r['rate']:.0f} msg/s, "
          f"{args.devices} devices); daemon options {' '.join(extra) or '(defaults)'}")
    print(f"  RSS: {r['rss_first']:.1f} MB at start, {r['rss_after_warmup']:.1f} MB after "
          f"warm-up, {r['rss_last']:.1f} MB at the end, max {r['rss_max']:.1f} MB; growth "
          f"after warm-up {r['slope_mb_per_h']:+.2f} MB/h (goal <= 5) "
          f"{'OK' if ok_rss else 'MISSED'}")
    print(f"  backlog: {r['received']} of {r['expected']} windows classified, queue depth "
          f"max {r['queue_depth_max']} end {r['queue_depth_end']}, drops {r['drops']}, "
          f"gaps {r['gaps']}, "
          f"daemon messages_in {r['messages_in']}, latency {r['latency_ms']} "
          f"{'OK' if ok_backlog else 'MISSED'}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0 if ok_rss and ok_backlog else 1


if __name__ == "__main__":
    raise SystemExit(main())
