"""Reliability figures of the daemon, side by side on one mosquitto (default settings).

    python bench/bench_reliability.py           # full run (about a minute)
    python bench/bench_reliability.py --quick   # smoke run

1. QoS 1 throughput on one-sample JSON messages: clean session (paho acknowledges on
   receipt) vs a persistent session (``--client-id``: acknowledged once the worker took the
   message) with the journal of partial windows off, on (the default, no fsync), and on
   with fsync after every worker cycle, alternating rounds, mosquitto's default
   ``max_inflight_messages 20``.
   Also the journal alone: microseconds per worker cycle to record and commit 20 one-sample
   messages of 20 devices (what mosquitto's in-flight window lets one cycle take), with and
   without fsync, in the system temp directory.
2. Reconnect after a broker restart with the default backoff (1 s doubling to 60 s, with
   jitter): seconds from the broker listening again to the daemon subscribed again.
3. Backlog after a daemon restart: N messages published while it was down (persistent
   session), time from start to all of them classified.

The memory side (RSS over time) is ``bench/soak.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.daemon import Daemon  # noqa: E402
from tests.daemon_helpers import config, wait_for  # noqa: E402
from tests.models import mean_model  # noqa: E402
from tests.mqtt_helpers import Broker, mosquitto_pub  # noqa: E402


def throughput(broker, model, n: int, **settings) -> float:
    daemon = Daemon(config(broker, model, qos=1, **settings))
    daemon.start()
    daemon.link.subscribed.wait(5)
    data = "\n".join(["[0.1, 0.2, 0.3]"] * n)
    t0 = time.perf_counter()
    mosquitto_pub(broker, "sensors/r/a", data, lines=True, qos=1, timeout=300)
    wait_for(lambda: daemon.stats.classifications >= n // 8, timeout=120)
    rate = n / (time.perf_counter() - t0)
    daemon.stop()
    return rate


def journal_cost(directory: Path, fsync: bool, cycles: int = 2000) -> float:
    """Microseconds per cycle: 20 devices x 1 sample recorded, then one commit."""
    import numpy as np

    from edge.journal import Journal
    from edge.windows import WindowBuffers

    buffers = WindowBuffers(8, 3, 8)
    journal = Journal(directory / f"bench-{fsync}.journal", fsync=fsync)
    values, times = np.zeros((1, 3), np.float32), np.zeros(1)
    t0 = time.perf_counter()
    for i in range(cycles):
        for d in range(20):
            journal.record(f"dev{d}", values, times + i, True)
        journal.commit(buffers)
    took = time.perf_counter() - t0
    journal.close()
    return took / cycles * 1e6


def reconnect(broker, model) -> float:
    daemon = Daemon(config(broker, model))
    daemon.start()
    daemon.link.subscribed.wait(5)
    broker.stop()
    wait_for(lambda: not daemon.link.connected.is_set(), timeout=10)
    broker.start()
    t0 = time.perf_counter()
    wait_for(lambda: daemon.link.subscribed.is_set(), timeout=120)
    took = time.perf_counter() - t0
    daemon.stop()
    return took


def backlog(broker, model, n: int) -> tuple[float, float]:
    settings = dict(client_id="bench-backlog", qos=1)
    first = Daemon(config(broker, model, **settings))
    first.start()
    first.link.subscribed.wait(5)
    first.stop()
    mosquitto_pub(broker, "sensors/b/a", "\n".join(["[0.1, 0.2, 0.3]"] * n), lines=True,
                  qos=1, timeout=300)
    t0 = time.perf_counter()
    daemon = Daemon(config(broker, model, **settings))
    daemon.start()
    wait_for(lambda: daemon.stats.classifications == n // 8, timeout=300)
    took = time.perf_counter() - t0
    daemon.stop()
    return took, n / took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--messages", type=int, default=20000, help="messages per round")
    args = ap.parse_args()
    n = 4000 if args.quick else args.messages
    rounds = 1 if args.quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        broker = Broker(tmp / "broker").start()
        try:
            model = mean_model(tmp / "m.onnx", window=8, hop=8)
            clean = []
            journals = {"off": dict(journal="off"), "on (default, no fsync)": {},
                        "on + fsync": dict(journal_fsync=True)}
            persistent: dict[str, list[float]] = {k: [] for k in journals}
            for i in range(rounds):
                # A fresh client id per round: a persistent session would otherwise have the
                # broker queue the clean round's messages for it while it is offline.
                clean.append(throughput(broker, model, n))
                for j, (name, extra) in enumerate(journals.items()):
                    persistent[name].append(throughput(
                        broker, model, n, client_id=f"bench-persist-{i}-{j}", **extra))
            recon = [reconnect(broker, model) for _ in range(rounds)]
            back_s, back_rate = backlog(broker, model, n)
            cost = {f: statistics.median(journal_cost(tmp, f) for _ in range(rounds))
                    for f in (False, True)}
        finally:
            broker.stop()
    c = statistics.median(clean)
    rows = "".join(
        f"| QoS 1 throughput, persistent session + manual ack, journal {name} | "
        f"{statistics.median(v):,.0f} msg/s ({statistics.median(v) / c:.2f}x) |\n"
        for name, v in persistent.items())
    print("<!-- begin markdown -->")
    print(f"| figure | value |\n|---|---|\n"
          f"| QoS 1 throughput, clean session (median of {rounds}) | {c:,.0f} msg/s |\n"
          f"{rows}"
          f"| broker restart -> subscribed again, default backoff | median "
          f"{statistics.median(recon):.2f} s (all {', '.join(f'{x:.2f}' for x in recon)}) |\n"
          f"| {n:,} messages queued while down -> all classified after start | "
          f"{back_s:.2f} s ({back_rate:,.0f} msg/s, start included) |\n"
          f"| journal: record + commit of one 20-message cycle, no fsync | "
          f"{cost[False]:,.0f} us |\n"
          f"| journal: record + commit of one 20-message cycle, fsync | {cost[True]:,.0f} us |")
    print("<!-- end markdown -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
