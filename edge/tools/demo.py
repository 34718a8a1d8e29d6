"""``sigmoid-edge demo``: the whole product on one machine in about a minute.

1. A broker: amqtt inside this process (:mod:`edge.tools.embedded_broker`), or ``--broker URL``.
2. A model: synthetic machine-vibration recordings (:mod:`edge.tools.synthetic`, seeded, shipped
   with the package, so there is no data licence to worry about) are written as a CSV
   sensor log and ``sigmoid-train fit`` trains on them (a subprocess: the edge never
   imports the trainer). ``--model PATH`` skips this and uses your model.
3. The daemon: ``sigmoid-edge run`` as a child process, exactly as on a Raspberry Pi.
4. The simulator (:mod:`edge.tools.simulate`, other seeds than training) streams ``--devices``
   machines that change fault class every few seconds and announces each true label on
   ``sim/{device}/label``.
5. A live view scores every classification against the true label of its window (windows
   that straddle a label change are shown but not scored), then a summary line with the
   accuracy, ``summary.json``, ``classifications.jsonl`` and ``report.png`` in ``--out``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge import topics
from edge.tools import synthetic
from edge.tools.record import LabelBook
from edge.tools.simulate import LABEL_TOPIC, SENSOR_TOPIC, Simulator, SyntheticSource

log = logging.getLogger(__name__)

OUTPUT_TOPIC = "edge/{device}/classification"
WINDOW = 100  # samples: 1 s at 100 Hz, 5 turns of the simulated motor
HOP = 50
FEATURES = "stats,diff_stats,spectral"
HIDDEN = "32"


@dataclass
class DemoOptions:
    """What ``sigmoid-edge demo`` does; the command-line flags map one to one."""

    out: Path = Path("demo-output")
    broker: str | None = None
    model: Path | None = None
    devices: int = 4
    duration: float = 30.0
    budget: float = 55.0
    rate_hz: float = 100.0
    fmt: str = "object"
    train_seconds: float = 60.0
    seed: int = 1
    mqtt_version: str = "3.1.1"
    live: bool | None = None  # None: redraw in a terminal, plain lines otherwise
    plot: bool = True
    node: str = field(default_factory=lambda: f"demo-{os.getpid()}")


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where its log is."""


# -- scoring -----------------------------------------------------------------------------


@dataclass
class DeviceScore:
    truth: str = ""
    predicted: str = ""
    confidence: float = 0.0
    windows: int = 0
    scored: int = 0
    correct: int = 0


class LiveScore:
    """Each classification against the true label of its window.

    A window is scored when its first and last sample have the same true label (from the
    simulator's ``sim/{device}/label`` messages); windows across a label change are
    counted as ``mixed`` and left out of the accuracy, as any honest offline evaluation of
    windowed data would.
    """

    def __init__(self):
        self.labels = LabelBook()
        self.devices: dict[str, DeviceScore] = {}
        self.records: list[dict] = []
        self.models: set[str] = set()

    def on_label(self, device: str, doc: dict, arrived: float) -> None:
        ts = doc.get("ts", arrived)
        self.labels.add(device, float(ts), doc.get("label"))

    def on_classification(self, doc: dict) -> dict:
        device = str(doc.get("device", "?"))
        start, end = float(doc["window_start"]), float(doc["window_end"])
        first, last = self.labels.lookup(device, np.array([start, end]))
        truth = first if first == last and first else ""
        predicted = doc.get("label", "")
        d = self.devices.setdefault(device, DeviceScore())
        d.predicted, d.confidence = predicted, float(doc.get("confidence", 0.0))
        d.truth = truth or "(changing)"
        d.windows += 1
        if truth:
            d.scored += 1
            d.correct += predicted == truth
        sha = (doc.get("model") or {}).get("sha256", "")
        self.models.add(sha)
        rec = {"device": device, "window_start": start, "window_end": end, "truth": truth,
               "truth_start": first, "truth_end": last, "predicted": predicted,
               "confidence": d.confidence, "model_sha256": sha}
        self.records.append(rec)
        return rec

    @property
    def windows(self) -> int:
        return sum(d.windows for d in self.devices.values())

    @property
    def scored(self) -> int:
        return sum(d.scored for d in self.devices.values())

    @property
    def correct(self) -> int:
        return sum(d.correct for d in self.devices.values())

    @property
    def accuracy(self) -> float:
        return self.correct / self.scored if self.scored else float("nan")


# -- the live view -----------------------------------------------------------------------


class LiveView:
    """Draws the table of devices; in place in a terminal, a plain line every 2 s otherwise."""

    def __init__(self, score: LiveScore, *, live: bool | None, stream=None):
        self.score = score
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self._last_line = 0.0
        self._drawn = 0

    def draw(self, elapsed: float, msg_rate: float, model: str, final: bool = False) -> None:
        s = self.score
        acc = f"{100 * s.accuracy:5.1f}%" if s.scored else "   - "
        if not self.live:
            now = time.monotonic()
            if final or now - self._last_line >= 2.0:
                self._last_line = now
                print(f"[{elapsed:5.1f} s] {msg_rate:6.0f} msg/s  windows {s.windows:4d}  "
                      f"running accuracy {acc} ({s.correct}/{s.scored})",
                      file=self.stream, flush=True)
            return
        lines = [
            f"sigmoid-edge demo   {elapsed:5.1f} s   {msg_rate:6.0f} msg/s in   model {model}",
            "",
            f"{'device':8s} {'true label':14s} {'predicted':14s} {'confidence':>10s} "
            f"{'windows':>8s} {'accuracy':>9s}",
        ]
        for name in sorted(s.devices, key=_natural):
            d = s.devices[name]
            dacc = f"{100 * d.correct / d.scored:8.1f}%" if d.scored else "        -"
            mark = " x" if d.truth[:1] != "(" and d.predicted != d.truth else "  "
            lines.append(f"{name:8s} {d.truth:14s} {d.predicted:14s} {d.confidence:10.2f} "
                         f"{d.windows:8d} {dacc}{mark}")
        mixed = s.windows - s.scored
        lines += ["", f"running accuracy {acc}  ({s.correct} of {s.scored} windows; "
                      f"{mixed} across a label change, not scored)"]
        out = ""
        if self._drawn:
            out += f"\x1b[{self._drawn}F"  # back to the top of the previous drawing
        out += "".join(f"{line}\x1b[K\n" for line in lines)
        self.stream.write(out)
        self.stream.flush()
        self._drawn = len(lines)


def _natural(name: str):
    digits = "".join(ch for ch in name if ch.isdigit())
    return (name.rstrip("0123456789"), int(digits) if digits else 0)


# -- the steps ---------------------------------------------------------------------------


def write_training_data(path: Path, *, devices: int = 4, seconds: float = 60.0,
                        rate_hz: float = synthetic.SAMPLE_RATE_HZ, seed: int = 1000) -> int:
    """Synthetic recordings of every class as a labelled CSV sensor log; returns the rows."""
    from edge.tools.sensorfiles import CsvWriter

    source = SyntheticSource(rate_hz=rate_hz, seed=seed, segment_seconds=(4.0, 8.0))
    n = int(seconds * rate_hz)
    Path(path).unlink(missing_ok=True)  # CsvWriter appends; a rerun must not double the data
    rows = 0
    with CsvWriter(path, source.channels, device=True, label=True) as w:
        for k in range(devices):
            got = 0
            t0 = 1_700_000_000.0 + 100_000.0 * k
            for seg in source.segments(k, devices):
                m = min(len(seg.data), n - got)
                ts = t0 + (got + np.arange(m)) / rate_hz
                w.write_many(ts.tolist(), seg.data[:m], [f"rec{k + 1}"] * m, [seg.label] * m)
                got += m
                if got >= n:
                    break
            rows += got
    return rows


def _child_env() -> dict:
    """Environment for the trainer and daemon processes: they import the same packages as
    this one even when it runs from a source tree that is not installed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGMOID_EDGE_")}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def train(out: Path, *, seconds: float, seed: int) -> Path:
    """Train on synthetic data with ``sigmoid-train fit``; returns the int8 model's path."""
    out.mkdir(parents=True, exist_ok=True)
    data = out / "train.csv"
    test = out / "test.csv"
    write_training_data(data, seconds=seconds, seed=seed + 1000)
    write_training_data(test, seconds=seconds / 4, seed=seed + 2000)
    model_dir = out / "model"
    cmd = [sys.executable, "-m", "trainer", "fit", str(data), "--test", str(test),
           "--out", str(model_dir), "--window", str(WINDOW), "--hop", str(HOP),
           "--seed", str(seed), "--name", "demo-vibration",
           # Fixed settings: model selection by validation would take most of the minute.
           "--features", FEATURES, "--hidden", HIDDEN]
    log_path = out / "train.log"
    with open(log_path, "w") as logf:
        proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=_child_env())
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        hint = ""
        if any("No module named" in line for line in tail):
            hint = " (the demo needs the trainer: pip install 'sigmoid-edge[train,demo]')"
        raise DemoError(f"training failed{hint}; see {log_path}:\n  " + "\n  ".join(tail))
    model = model_dir / "model.int8.onnx"
    if not model.exists():
        raise DemoError(f"sigmoid-train fit wrote no {model}; see {log_path}")
    return model


def _start_daemon(opts: DemoOptions, broker_url: str, model: Path) -> tuple[subprocess.Popen,
                                                                              Path]:
    log_path = opts.out / "daemon.log"
    cmd = [sys.executable, "-m", "edge", "run", "--model", str(model), "--broker", broker_url,
           "--node", opts.node, "--mqtt-version", opts.mqtt_version, "--qos", "0",
           "--stats-interval", "5"]
    logf = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=_child_env())
    logf.close()
    return proc, log_path


def _stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_demo(opts: DemoOptions) -> dict:
    """Run every step; returns the summary (also written to ``out/summary.json``).

    Raises
    ------
    DemoError
        Naming the step that failed and its log file.
    """
    from edge.mqtt import MqttError, connect_client

    t_start = time.monotonic()
    opts.out.mkdir(parents=True, exist_ok=True)
    say = _Say()
    embedded = None
    daemon = None
    clients = []
    try:
        # 1. broker
        if opts.broker:
            broker_url = opts.broker
            say(f"broker: {broker_url}")
        else:
            from edge.tools.embedded_broker import EmbeddedBroker

            embedded = EmbeddedBroker().start()
            broker_url = embedded.url
            say(f"broker: embedded amqtt on {broker_url} (MQTT 3.1.1)")

        # 2. model
        if opts.model:
            model = Path(opts.model)
            say(f"model: {model}")
        else:
            t = time.monotonic()
            say(f"training on {opts.train_seconds:g} s of synthetic vibration per recording "
                f"(4 classes, 3 axes, 100 Hz) with sigmoid-train fit ...")
            model = train(opts.out, seconds=opts.train_seconds, seed=opts.seed)
            summary = _train_summary(model.parent)
            say(f"trained in {time.monotonic() - t:.1f} s: {summary}")
        train_done = time.monotonic() - t_start
        # Keep about 8 s for starting the daemon, the last windows, stopping and the plot.
        if opts.budget - train_done - 8.0 < 5.0:
            raise DemoError(f"only {opts.budget - train_done - 8.0:.1f} s left of the "
                            f"{opts.budget:g} s budget after training; raise --budget or "
                            "lower --train-seconds")

        # 3. daemon, and our client to watch it
        score = LiveScore()
        inbox: queue.Queue = queue.Queue()
        try:
            watcher = connect_client(broker_url, mqtt_version=opts.mqtt_version)
        except (MqttError, ValueError) as exc:
            raise DemoError(f"cannot connect to the broker: {exc}") from None
        clients.append(watcher)
        online = threading.Event()
        status_topic = topics.node_topic(topics.STATUS, opts.node)

        def on_message(client, userdata, msg):
            if msg.topic == status_topic:
                if msg.payload == b"online":
                    online.set()
                return
            inbox.put((msg.topic, msg.payload, time.time()))

        watcher.on_message = on_message
        watcher.subscribe([(OUTPUT_TOPIC.replace("{device}", "+"), 1),
                           (LABEL_TOPIC.replace("{device}", "+"), 1), (status_topic, 1)])
        daemon, daemon_log = _start_daemon(opts, broker_url, model)
        deadline = time.monotonic() + 15
        while not online.wait(0.1):
            if daemon.poll() is not None or time.monotonic() > deadline:
                tail = "\n  ".join(daemon_log.read_text(errors="replace").splitlines()[-5:])
                raise DemoError(f"the daemon did not come online; see {daemon_log}:\n  {tail}")
        say(f"daemon: sigmoid-edge run --node {opts.node} is online (log: {daemon_log})")

        # 4. simulator, for what is left of the time budget
        # Keep about 8 s for the last windows, stopping everything and the plot.
        duration = max(1.0, min(opts.duration, opts.budget - (time.monotonic() - t_start) - 8))
        try:
            sim_client = connect_client(broker_url, mqtt_version=opts.mqtt_version)
        except (MqttError, ValueError) as exc:
            raise DemoError(f"cannot connect the simulator: {exc}") from None
        clients.append(sim_client)
        source = SyntheticSource(rate_hz=opts.rate_hz, seed=opts.seed,
                                 segment_seconds=(4.0, 8.0))
        sim = Simulator(sim_client, source, devices=opts.devices, fmt=opts.fmt,
                        topic=SENSOR_TOPIC, label_topic=LABEL_TOPIC)
        say(f"simulating {opts.devices} machines at {opts.rate_hz:g} Hz for {duration:.0f} s "
            f"({opts.fmt} payloads on sensors/<device>/data, true labels on sim/<device>/label)")
        stop = threading.Event()
        sim_thread = threading.Thread(target=sim.run, args=(stop, duration), daemon=True)
        stream_start = time.monotonic()
        sim_thread.start()
        view = LiveView(score, live=opts.live)
        records = open(opts.out / "classifications.jsonl", "w")
        rates: deque = deque(maxlen=20)
        model_name = "?"
        interrupted = False
        try:
            tail_until = None
            while True:
                now = time.monotonic()
                if not sim_thread.is_alive() and tail_until is None:
                    tail_until = now + 1.0  # the last windows are still on their way
                if tail_until is not None and now >= tail_until:
                    break
                if daemon.poll() is not None:
                    raise DemoError(f"the daemon stopped; see {daemon_log}")
                _drain(inbox, score, records)
                if score.records:
                    model_name = score.records[-1]["model_sha256"][:12] or "?"
                rates.append((now, sim.stats.messages))
                rate = ((rates[-1][1] - rates[0][1]) / (rates[-1][0] - rates[0][0])
                        if len(rates) > 1 and rates[-1][0] > rates[0][0] else 0.0)
                view.draw(now - t_start, rate, model_name)
                time.sleep(0.25)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            stop.set()
            sim_thread.join(5)
            _drain(inbox, score, records)
            records.close()
        streamed = time.monotonic() - stream_start
        msg_rate = sim.stats.messages / streamed if streamed else 0.0
        view.draw(time.monotonic() - t_start, msg_rate, model_name, final=True)
        if interrupted:
            say("interrupted (Ctrl-C): stopped streaming early")
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()
        if daemon is not None:
            _stop_process(daemon)
        if embedded is not None:
            embedded.stop()

    summary = {
        "accuracy": None if not score.scored else round(score.accuracy, 4),
        "correct": score.correct,
        "scored_windows": score.scored,
        "windows": score.windows,
        "mixed_windows": score.windows - score.scored,
        "devices": opts.devices,
        "messages": sim.stats.messages,
        "samples": sim.stats.samples,
        "messages_per_s": round(msg_rate, 1),
        "stream_seconds": round(streamed, 2),
        "train_seconds": round(train_done, 2),
        "broker": "embedded amqtt" if embedded is not None else opts.broker,
        "model": str(model),
        "model_sha256": sorted(m for m in score.models if m),
    }
    if opts.plot:
        png = plot_report(score.records, opts.out / "report.png", t0=score.records[0][
            "window_start"] if score.records else 0.0)
        if png:
            summary["report"] = str(png)
    summary["total_seconds"] = round(time.monotonic() - t_start, 2)
    (opts.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _drain(inbox: queue.Queue, score: LiveScore, records) -> None:
    while True:
        try:
            topic, payload, arrived = inbox.get_nowait()
        except queue.Empty:
            return
        try:
            doc = json.loads(payload)
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        if topic.startswith("sim/"):
            score.on_label(topic.split("/")[1], doc, arrived)
        elif "window_start" in doc:
            records.write(json.dumps(score.on_classification(doc)) + "\n")


def _train_summary(model_dir: Path) -> str:
    try:
        report = json.loads((model_dir / "report.json").read_text())
        test = report["metrics"]["int8"]["test"]["accuracy"]
        return f"offline test accuracy (int8) {test:.3f}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"model in {model_dir}"


class _Say:
    """Progress lines with the time since the demo started."""

    def __init__(self):
        self.t0 = time.monotonic()

    def __call__(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:5.1f} s] {text}", flush=True)


def plot_report(records: list[dict], path: Path, t0: float = 0.0) -> Path | None:
    """True and predicted labels over time per device, and the running accuracy (PNG).

    Returns None (and says why in the log) when matplotlib is not installed.
    """
    if not records:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("no report.png: matplotlib is not installed (pip install matplotlib)")
        return None
    devices = sorted({r["device"] for r in records}, key=_natural)
    labels = sorted({r["truth"] for r in records if r["truth"]}
                    | {r["predicted"] for r in records})
    ypos = {lab: i for i, lab in enumerate(labels)}
    fig, axes = plt.subplots(len(devices) + 1, 1, figsize=(10, 1.6 * len(devices) + 2.2),
                             sharex=True)
    for ax, dev in zip(axes, devices, strict=False):
        rs = [r for r in records if r["device"] == dev]
        t = np.array([r["window_end"] - t0 for r in rs])
        truth = [r["truth_end"] for r in rs]
        ax.step(t, [ypos.get(x, np.nan) for x in truth], where="post", color="0.6", lw=6,
                alpha=0.6, label="true label")
        ok = np.array([r["predicted"] == r["truth"] for r in rs])
        scored = np.array([bool(r["truth"]) for r in rs])
        y = np.array([ypos[r["predicted"]] for r in rs])
        ax.scatter(t[ok], y[ok], s=10, color="tab:green", label="predicted (right)", zorder=3)
        bad = scored & ~ok
        ax.scatter(t[bad], y[bad], s=14, color="tab:red", marker="x", label="predicted (wrong)",
                   zorder=3)
        ax.scatter(t[~scored], y[~scored], s=10, color="tab:orange",
                   label="window across a change", zorder=3)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylim(-0.6, len(labels) - 0.4)
        ax.set_ylabel(dev)
    handles, names = axes[0].get_legend_handles_labels()
    t = np.array([r["window_end"] - t0 for r in records])
    scored = np.array([bool(r["truth"]) for r in records])
    correct = np.array([r["predicted"] == r["truth"] for r in records]) & scored
    order = np.argsort(t)
    run = np.cumsum(correct[order]) / np.maximum(np.cumsum(scored[order]), 1)
    axes[-1].plot(t[order], 100 * run, color="tab:blue")
    axes[-1].set_ylim(0, 101)
    axes[-1].set_ylabel("running\naccuracy %")
    axes[-1].set_xlabel("seconds")
    # The accuracy panel has room below its line; the device panels have none.
    axes[-1].legend(handles, names, loc="lower right", fontsize=7, ncol=2)
    total = correct.sum() / max(scored.sum(), 1)
    fig.suptitle(f"sigmoid-edge demo: accuracy {100 * total:.1f}% on {scored.sum()} windows")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

