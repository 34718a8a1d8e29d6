"""How fast ``sigmoid-edge simulate`` can publish and ``sigmoid-edge record`` can write.

    python bench/bench_simulate_record.py            # 3 s per run
    python bench/bench_simulate_record.py --quick    # 1 s per run

Against a mosquitto started for the run (loopback), side by side in one run:

- simulate, per payload format: 20 devices asked for far more samples than can be sent
  (2,000 Hz each), so the figure is the simulator's ceiling; a paho subscriber counts what
  the broker delivered;
- record: a paho publisher sends one-sample JSON objects as fast as it can (QoS 0) to a
  recorder, and the figure is rows written per second until all of them are on disk.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt  # noqa: E402

from edge.mqtt import connect_client  # noqa: E402
from edge.tools.record import Recorder  # noqa: E402
from edge.tools.simulate import Simulator, SyntheticSource  # noqa: E402
from tests.mqtt_helpers import Broker  # noqa: E402


class Counter:
    def __init__(self, broker: Broker, topic: str):
        self.n = 0
        self.samples = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topic, 0)
        self.client.loop_start()
        time.sleep(0.3)

    def _on_message(self, client, userdata, msg):
        self.n += 1

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def bench_simulate(broker: Broker, fmt: str, seconds: float) -> dict:
    counter = Counter(broker, "sensors/#")
    client = connect_client(broker.url, mqtt_version="3.1.1")
    sim = Simulator(client, SyntheticSource(rate_hz=2000.0), devices=20, fmt=fmt)
    t = time.perf_counter()
    stats = sim.run(duration=seconds)
    elapsed = time.perf_counter() - t
    last = -1
    while counter.n != last:  # let the subscriber catch up
        last = counter.n
        time.sleep(0.5)
    client.disconnect()
    client.loop_stop()
    counter.close()
    return {"format": fmt, "messages_s": stats.messages / elapsed,
            "samples_s": stats.samples / elapsed, "delivered": counter.n / max(stats.messages, 1)}


def bench_record(broker: Broker, n: int, workdir: Path) -> dict:
    client = connect_client(broker.url, mqtt_version="3.1.1")
    out = workdir / "bench.csv"
    rec = Recorder(client, out, topic="sensors/{device}/#", qos=0)
    rec.subscribe()
    rec.subscribed.wait(5)
    stop = threading.Event()
    thread = threading.Thread(target=rec.run, args=(stop,))
    thread.start()
    pub = connect_client(broker.url, mqtt_version="3.1.1")
    t = time.perf_counter()
    for i in range(n):
        pub.publish(f"sensors/dev{i % 10}/data",
                    f'{{"ts":{1.7e9 + i * 0.01:.3f},"x":{i % 7 * 0.1:.3f},"y":0.25,"z":-1.5}}')
    while rec.stats.messages + rec.stats.dropped < n and time.perf_counter() - t < 120:
        time.sleep(0.01)
    stop.set()
    thread.join()
    elapsed = time.perf_counter() - t
    pub.disconnect()
    pub.loop_stop()
    client.disconnect()
    client.loop_stop()
    return {"rows": rec.stats.rows, "sent": n, "rows_s": rec.stats.rows / elapsed,
            "bytes": out.stat().st_size}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s runs, fewer messages")
    args = parser.parse_args(argv)
    seconds = 1.0 if args.quick else 3.0
    n = 20_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker").start()
        try:
            sims = [bench_simulate(broker, fmt, seconds) for fmt in ("object", "array", "batch")]
            rec = bench_record(broker, n, Path(tmp))
        finally:
            broker.stop()
    print("<!-- begin markdown -->")
    print(f"simulate: 20 devices asking for 2,000 Hz each (40,000 samples/s), {seconds:g} s per "
          "format; delivered = share of the published messages a paho subscriber received "
          "(QoS 0).\n")
    print("| format | messages/s | samples/s | delivered |")
    print("|---|---:|---:|---:|")
    for r in sims:
        print(f"| {r['format']} | {r['messages_s']:,.0f} | {r['samples_s']:,.0f} | "
              f"{r['delivered']:.3f} |")
    print(f"\nrecord: {rec['sent']:,} one-sample JSON objects at QoS 0 from one paho publisher: "
          f"{rec['rows']:,} rows written ({rec['bytes']:,} bytes) at "
          f"**{rec['rows_s']:,.0f} rows/s**, until every received message was on disk.")
    print("<!-- end markdown -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
