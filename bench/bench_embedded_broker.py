"""Throughput of the embedded broker (amqtt) that ``sigmoid-edge demo`` uses, beside mosquitto.

    python bench/bench_embedded_broker.py            # 5000 QoS 1 messages, 3 rounds
    python bench/bench_embedded_broker.py --quick    # 1000 messages, 1 round

One paho publisher, one paho subscriber, small JSON payloads at QoS 1 (as the demo's
simulated devices send). The demo streams about 400 msg/s in and as many out, so the
broker must carry well over 400 msg/s; tests/test_demo.py checks only that the traffic
arrives complete and in order (a speed bound there would fail on a loaded CI machine).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.mqtt import connect_client  # noqa: E402
from edge.tools.embedded_broker import EmbeddedBroker  # noqa: E402
from tests.mqtt_helpers import Broker, Collector  # noqa: E402


def one_round(broker, n: int) -> float:
    """Messages per second from the first publish to the last delivery."""
    with Collector(broker, "sensors/#", qos=1) as sub:
        pub = connect_client(broker.url, mqtt_version="3.1.1")
        try:
            t0 = time.perf_counter()
            for i in range(n):
                pub.publish(f"sensors/dev{i % 4}/data", json.dumps({"i": i, "x": 0.5}), qos=1)
            sub.take(n, timeout=120)
            return n / (time.perf_counter() - t0)
        finally:
            pub.disconnect()
            pub.loop_stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1000 messages, 1 round")
    args = parser.parse_args(argv)
    n, rounds = (1000, 1) if args.quick else (5000, 3)
    import amqtt

    print(f"machine: {platform.machine()}, Python {platform.python_version()}, amqtt "
          f"{getattr(amqtt, '__version__', '?')}")
    print("\n| broker | messages | rounds | msg/s (best) | msg/s (worst) |")
    print("|---|---:|---:|---:|---:|")
    brokers = [("embedded amqtt", lambda tmp: EmbeddedBroker().start())]
    if shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists():
        brokers.append(("mosquitto", lambda tmp: Broker(Path(tmp)).start()))
    for name, start in brokers:
        with tempfile.TemporaryDirectory() as tmp:
            broker = start(tmp)
            try:
                rates = [one_round(broker, n) for _ in range(rounds)]
            finally:
                broker.stop()
        print(f"| {name} | {n} | {rounds} | {max(rates):.0f} | {min(rates):.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
