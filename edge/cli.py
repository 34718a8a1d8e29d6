"""``sigmoid-edge``: the command line of the edge daemon.

Each subcommand has its own ``_add_<name>`` function that declares its arguments and an
example, and a handler that imports what it needs only when it runs, so that ``--help``
stays fast on a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

# The daemon's arrays are small (a batch of windows): OpenBLAS's worker threads cost more
# than they give, and spinning on a Pi's cores they slow the numpy runtime's matmuls down
# (2.4x per node measured on a loaded 2-core machine). Before numpy loads; the user's wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from edge import __version__  # noqa: E402
from edge.runtime import RUNTIMES  # noqa: E402

LOG_LEVELS = ("debug", "info", "warning", "error")


def base_parser(
    prog: str, description: str
) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """Build a parser with the options every sigmoid-edge command shares.

    Parameters
    ----------
    prog : str
        Program name shown in usage lines.
    description : str
        One paragraph shown by ``--help``.

    Returns
    -------
    parser, subparsers
        The top-level parser and the action to add subcommands to.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=LOG_LEVELS,
        help="how much to log on stderr (default: info)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser, sub


def add_command(sub, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """Add one subcommand whose ``--help`` ends with a worked example."""
    return sub.add_parser(
        name,
        help=help,
        description=help,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def setup_logging(level: str) -> None:
    """Log to stderr with timestamps, at ``level`` (one of :data:`LOG_LEVELS`)."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_parsed(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the handler a subcommand stored in ``args.func``; print help when there is none."""
    setup_logging(args.log_level)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)


def _add_run(sub) -> None:
    p = add_command(
        sub, "run", "Classify MQTT sensor streams with a model file, publishing the labels.",
        "sigmoid-edge run --model model.int8.onnx --broker mqtt://localhost:1883",
    )
    # Every default is None so that the config file and SIGMOID_EDGE_* can fill it in
    # (precedence: CLI > environment > file > defaults, see docs/config.md).
    p.add_argument("--config", metavar="FILE", help="TOML config file (keys: docs/config.md)")
    p.add_argument("--model", metavar="PATH", help="the ONNX model file")
    p.add_argument("--broker", metavar="URL",
                   help="mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS "
                        "(default mqtt://localhost:1883)")
    p.add_argument("--client-id", help="MQTT client id (default sigmoid-edge-<node>)")
    p.add_argument("--qos", type=int, choices=(0, 1, 2), help="input subscription QoS "
                   "(default 1)")
    p.add_argument("--output-qos", type=int, choices=(0, 1, 2),
                   help="QoS of the classifications published (default 1)")
    p.add_argument("--node", help="name under sigmoid-edge/<node>/ (default: host name)")
    p.add_argument("--input-topic", metavar="TEMPLATE",
                   help="input topic with {device} as one level (default sensors/{device}/#)")
    p.add_argument("--payload", choices=("json", "binary", "cbor", "sparkplug"),
                   help="input payload format (default json, which also reads binary sample "
                        "blocks; cbor and sparkplug need their extras; docs/payloads.md)")
    p.add_argument("--output-topic", metavar="TEMPLATE",
                   help="output topic (default edge/{device}/classification)")
    p.add_argument("--mqtt-version", choices=("5", "3.1.1"), help="protocol (default 5)")
    p.add_argument("--shard", metavar="K/N",
                   help="many daemons on one broker: keep only the devices whose crc32(name) "
                        "mod N is K (e.g. 0/2 and 1/2); see README 'Many daemons'")
    p.add_argument("--username", help="broker user; the password comes from the "
                   "SIGMOID_EDGE_PASSWORD environment variable or --password-file")
    p.add_argument("--password-file", metavar="FILE", help="file holding the broker password")
    p.add_argument("--tls-ca", metavar="FILE", help="CA bundle for mqtts:// (default: system)")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate for mqtts://")
    p.add_argument("--tls-key", metavar="FILE", help="client key for mqtts://")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--runtime", choices=RUNTIMES,
                   help="inference runtime: onnxruntime, numpy (for boards onnxruntime has no "
                        "wheel for, e.g. 32-bit Raspberry Pi OS), or auto = onnxruntime when "
                        "it is installed, else numpy (default auto)")
    p.add_argument("--hop", type=int, help="samples between windows (default 0 = the model's)")
    p.add_argument("--max-devices", type=int,
                   help="devices buffered at once; least recently used evicted (default 1000)")
    p.add_argument("--queue-size", type=int,
                   help="bounded queue between network thread and worker (default 10000)")
    p.add_argument("--stats-interval", type=float, metavar="SECONDS",
                   help="how often stats are published (default 30)")
    p.add_argument("--trusted-key", dest="trusted_keys", action="append", metavar="PUB",
                   help="public key allowed to sign model updates (repeatable)")
    p.add_argument("--smoothing", type=int, metavar="K",
                   help="average the last K probability vectors per device (default 1 = off)")
    p.add_argument("--min-confidence", type=float, metavar="P",
                   help="below this confidence the label is 'uncertain' (default 0)")
    p.add_argument("--on-change", action="store_true", default=None,
                   help="publish only when a device's label changes")
    p.add_argument("--only-anomalies", action="store_true", default=None,
                   help="publish only windows whose anomaly_score is above the model's "
                        "anomaly_threshold (needs a model from fit-anomaly or fit --anomaly)")
    p.add_argument("--capture", choices=("uncertain", "anomalies", "all", "none"),
                   help="publish the raw windows worth labelling on "
                        "sigmoid-edge/<node>/capture/<device>: those below --capture-below "
                        "confidence (uncertain), flagged anomalous (anomalies), every one (all); "
                        "default none (collect them with 'sigmoid-train collect')")
    p.add_argument("--capture-below", type=float, metavar="P",
                   help="confidence below which a window is uncertain "
                        "(default: --min-confidence, or 0.6)")
    p.add_argument("--capture-rate", type=int, metavar="N",
                   help="at most N captures per device per hour (default 60)")
    p.add_argument("--capture-sample", type=float, metavar="F",
                   help="also capture a random fraction F of all windows, so the collected "
                        "data stays representative (default 0)")
    p.add_argument("--anomaly-min-windows", type=_k_of_n, metavar="K[/N]",
                   help="anomaly models: alarm (anomaly: true) only when K of a device's last "
                        "N windows are anomalous; K/N sets both (default N = K: K in a row)")
    p.add_argument("--anomaly-window-count", type=int, metavar="N",
                   help="the N of --anomaly-min-windows (default K)")
    p.add_argument("--ha-discovery", action="store_true", default=None,
                   help="announce each device to Home Assistant (MQTT discovery, retained)")
    p.add_argument("--ha-prefix", metavar="PREFIX",
                   help="Home Assistant's discovery prefix (default homeassistant)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus /metrics and /healthz on this port (default: off)")
    p.add_argument("--metrics-host", metavar="ADDR",
                   help="address the metrics server listens on (default 127.0.0.1; 0.0.0.0 "
                        "for a Prometheus on another machine)")
    p.add_argument("--log-level", dest="run_log_level", type=str.lower, choices=LOG_LEVELS,
                   help="how much to log (default info)")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration and load the model, then exit")
    p.set_defaults(func=_run)


RUN_KEYS = (
    "config", "model", "broker", "client_id", "qos", "output_qos", "node", "input_topic",
    "payload", "output_topic", "mqtt_version", "shard", "username", "password_file", "tls_ca",
    "tls_cert", "tls_key", "threads", "runtime", "hop", "max_devices", "queue_size",
    "stats_interval", "trusted_keys", "smoothing", "min_confidence", "on_change",
    "only_anomalies", "ha_discovery", "ha_prefix", "capture", "capture_below", "capture_rate",
    "capture_sample", "anomaly_window_count", "metrics_port", "metrics_host",
)


def _k_of_n(text: str) -> tuple[int, int | None]:
    """``3`` or ``3/5`` -> (K, N or None)."""
    k, _, n = text.partition("/")
    try:
        k_n = int(k), (int(n) if n else None)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected K or K/N (alarm when K of the last N windows are anomalous), "
            f"got {text!r}") from None
    if k_n[1] is not None and not 0 < k_n[0] <= k_n[1]:
        raise argparse.ArgumentTypeError(f"K/N needs 0 < K <= N, got {text!r}")
    return k_n


def _run(args: argparse.Namespace) -> int:
    from edge.config import ConfigError, load_config

    cli = {key: getattr(args, key, None) for key in RUN_KEYS}
    if args.anomaly_min_windows is not None:
        cli["anomaly_min_windows"], n = args.anomaly_min_windows
        if n is not None:
            if cli["anomaly_window_count"] not in (None, n):
                print("sigmoid-edge: config error: --anomaly-min-windows K/N and "
                      "--anomaly-window-count disagree on N", file=sys.stderr)
                return 1
            cli["anomaly_window_count"] = n
    level = args.run_log_level or (args.log_level if args.log_level != "info" else None)
    cli["log_level"] = level
    try:
        cfg = load_config(cli)
    except ConfigError as e:
        print(f"sigmoid-edge: config error: {e}", file=sys.stderr)
        return 1
    logging.getLogger().setLevel(cfg.log_level.upper())

    from edge.daemon import Daemon, make_parser
    from edge.models import ModelError, load_model
    from edge.mqtt import MqttError
    from edge.updates import verify_startup

    try:
        model = load_model(cfg.model, threads=cfg.threads, runtime=cfg.runtime,
                           extra_ops=cfg.extra_ops)
        make_parser(model, cfg)
        verify_startup(cfg, model)  # with --trusted-key: MODEL.sig must be valid
    except ModelError as e:
        print(f"sigmoid-edge: model error: {e}", file=sys.stderr)
        return 1
    if args.check_config:
        info = model.info
        print(f"config OK: model {info.name} {info.version} (sha256 {model.sha256[:12]}), "
              f"channels {list(info.channels)}, window {info.window}, "
              f"hop {cfg.hop or info.hop}, labels {list(info.labels)}; runtime "
              f"{model.runtime}; broker {cfg.broker}, "
              f"node {cfg.node}, input {cfg.input_topic}, output {cfg.output_topic}")
        return 0
    try:
        daemon = Daemon(cfg, model)
        return daemon.run()
    except ModelError as e:
        print(f"sigmoid-edge: model error: {e}", file=sys.stderr)
        return 1
    except MqttError as e:
        print(f"sigmoid-edge: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the metrics port cannot be bound (edge/metrics.py says which)
        print(f"sigmoid-edge: {e}", file=sys.stderr)
        return 1


def add_client_args(p: argparse.ArgumentParser, *, broker_required: bool = True,
                    mqtt_version: str = "3.1.1") -> None:
    """Broker connection options shared by ``simulate``, ``record`` and ``demo``."""
    p.add_argument("--broker", required=broker_required, metavar="URL",
                   help="broker URL, mqtt://HOST:PORT or mqtts://HOST:PORT")
    p.add_argument("--username", help="user name for the broker")
    p.add_argument("--password-file", metavar="FILE",
                   help="file holding the broker password (or set SIGMOID_EDGE_PASSWORD)")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificate for mqtts://")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate for mqtts://")
    p.add_argument("--tls-key", metavar="FILE", help="client key for mqtts://")
    p.add_argument("--mqtt-version", choices=("3.1.1", "5"), default=mqtt_version,
                   help=f"MQTT protocol version (default: {mqtt_version})")


def client_kwargs(args: argparse.Namespace) -> dict:
    """Connection keyword arguments from :func:`add_client_args` options."""
    from edge.credentials import read_password

    password = read_password(args.password_file)
    return {"mqtt_version": args.mqtt_version, "username": args.username or "",
            "password": password or "", "tls_ca": args.tls_ca or "",
            "tls_cert": args.tls_cert or "", "tls_key": args.tls_key or ""}


def stop_on_signals():
    """A :class:`threading.Event` set by SIGINT or SIGTERM (graceful stop, no traceback)."""
    import signal
    import threading

    stop = threading.Event()

    def handler(signum, frame):
        logging.getLogger("edge").info("got %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _fail(command: str, exc: Exception) -> int:
    print(f"sigmoid-edge {command}: error: {exc}", file=sys.stderr)
    return 2


def _add_simulate(sub) -> None:
    p = add_command(
        sub, "simulate",
        "Replay .ts or CSV sensor data (or --synthetic vibration) as live MQTT sensor streams, "
        "one device per stream, with the true label on sim/{device}/label.",
        "sigmoid-edge simulate --synthetic --broker mqtt://localhost:1883 --devices 4",
    )
    p.add_argument("data", nargs="?", metavar="DATA",
                   help="a UEA/UCR .ts file (one case after another per device) or a CSV log")
    p.add_argument("--synthetic", action="store_true",
                   help="generate machine-vibration data (normal and fault classes) instead")
    add_client_args(p)
    p.add_argument("--rate", type=float, metavar="HZ",
                   help="samples per second per device (default: the data's own rate; "
                        "required for .ts files; synthetic: 100)")
    p.add_argument("--devices", type=int, default=1, metavar="N",
                   help="simulated devices (default: 1; a CSV with a device column brings "
                        "its own)")
    p.add_argument("--format", choices=("object", "array", "batch", "binary", "cbor",
                                        "sparkplug"), default="object",
                   help="payload: one JSON object or array per sample, or batches as JSON, "
                        "binary sample blocks, CBOR or Sparkplug B DDATA (default: object; "
                        "docs/payloads.md)")
    p.add_argument("--batch-seconds", type=float, default=0.1, metavar="S",
                   help="with a batch format, one message per device this often (default 0.1)")
    p.add_argument("--loop", action="store_true", help="start again when the data ends")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--seed", type=int, default=0, help="seed of --synthetic (default 0)")
    p.add_argument("--qos", type=int, choices=(0, 1, 2), default=0,
                   help="QoS of sample messages (labels always use 1; default 0)")
    p.add_argument("--topic",
                   help="topic template of samples (default: sensors/{device}/data; "
                        "sparkplug: spBv1.0/sim/DDATA/simulator/{device})")
    p.add_argument("--label-topic", default="sim/{device}/label",
                   help="topic template of the true labels (default: sim/{device}/label)")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from edge.mqtt import MqttError, connect_client
    from edge.tools import simulate

    try:
        source = simulate.make_source(args.data, synthetic_data=args.synthetic,
                                      rate_hz=args.rate, loop=args.loop, seed=args.seed)
        kwargs = client_kwargs(args)
        if args.devices < 1:
            raise ValueError(f"--devices must be >= 1, got {args.devices}")
    except (ValueError, OSError) as exc:  # SensorFileError is a ValueError
        return _fail("simulate", exc)
    try:
        client = connect_client(args.broker, **kwargs)
    except (ValueError, MqttError) as exc:
        return _fail("simulate", exc)
    try:
        if args.topic is None:
            args.topic = (simulate.SPARKPLUG_TOPIC if args.format == "sparkplug"
                          else simulate.SENSOR_TOPIC)
        sim = simulate.Simulator(client, source, devices=args.devices, rate_hz=args.rate,
                                 fmt=args.format, batch_seconds=args.batch_seconds,
                                 topic=args.topic, label_topic=args.label_topic, qos=args.qos)
    except (ValueError, ImportError) as exc:
        client.disconnect()
        client.loop_stop()
        return _fail("simulate", exc)
    names = [s.name for s in sim.streams]
    logging.getLogger("edge.tools.simulate").info(
        "simulating %d device(s) %s at %g Hz, %s payloads on %s", len(names),
        ",".join(names[:8]) + ("..." if len(names) > 8 else ""), sim.rate_hz, args.format,
        args.topic)
    stop = stop_on_signals()
    try:
        stats = sim.run(stop, duration=args.duration)
    finally:
        client.disconnect()  # before loop_stop: the loop thread then ends at once
        client.loop_stop()
    print(f"simulate: {stats.messages} messages, {stats.samples} samples, "
          f"{stats.label_messages} label messages from {len(stats.per_device)} device(s) "
          f"in {stats.seconds:.1f} s")
    return 0


def _add_record(sub) -> None:
    p = add_command(
        sub, "record",
        "Record MQTT sensor messages into CSV logs that `sigmoid-train fit` reads "
        "(ts, device, label, one column per channel).",
        "sigmoid-edge record --broker mqtt://localhost:1883 --topic 'sensors/#' "
        "--out run1.csv --label-topic 'sim/{device}/label'",
    )
    add_client_args(p)
    p.add_argument("--topic",
                   help="sensor topics; the device is the level of '{device}' or of the first "
                        "wildcard (default: sensors/#; sparkplug: "
                        "spBv1.0/{group}/DDATA/{edge_node}/{device})")
    p.add_argument("--payload", choices=("json", "binary", "cbor", "sparkplug"), default="json",
                   help="payload format, as the daemon's --payload (default json, which also "
                        "reads binary sample blocks)")
    p.add_argument("--out", required=True, metavar="FILE.csv",
                   help="CSV file to write (appended to if it exists); larger recordings go "
                        "on in FILE.1.csv, FILE.2.csv, ...")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--label", metavar="L", help="label every row L")
    labels.add_argument("--label-topic", metavar="T",
                        help="label rows with what devices announce on T, e.g. "
                             "'sim/{device}/label' (JSON {label, ts} or plain text)")
    p.add_argument("--channels", metavar="A,B,C",
                   help="channel names in order (default: from the first message)")
    p.add_argument("--qos", type=int, choices=(0, 1, 2), default=1,
                   help="subscription QoS (default 1)")
    p.add_argument("--max-mb", type=float, default=100.0, metavar="MB",
                   help="start the next file when one reaches this size (default 100)")
    p.add_argument("--rate", type=float, metavar="HZ",
                   help="sample rate, for batches that carry a single ts")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--client-id", default="", help="MQTT client id (default: generated)")
    p.set_defaults(func=_record)


def _record(args: argparse.Namespace) -> int:
    from edge.mqtt import MqttError, connect_client
    from edge.tools import record

    channels = [c.strip() for c in args.channels.split(",")] if args.channels else None
    try:
        kwargs = client_kwargs(args)
        client = connect_client(args.broker, client_id=args.client_id, **kwargs)
    except (ValueError, OSError, MqttError) as exc:
        return _fail("record", exc)
    try:
        rec = record.Recorder(client, args.out, topic=args.topic, label=args.label,
                              label_topic=args.label_topic, channels=channels, qos=args.qos,
                              max_bytes=int(args.max_mb * 1024 * 1024), rate_hz=args.rate,
                              payload=args.payload)
    except (ValueError, ImportError) as exc:
        client.disconnect()
        client.loop_stop()
        return _fail("record", exc)
    # The client connected before the recorder set its callbacks: subscribe now too.
    rec.subscribe()
    stop = stop_on_signals()
    logging.getLogger("edge.tools.record").info("recording %s into %s", rec.filter, args.out)
    try:
        stats = rec.run(stop, duration=args.duration)
    finally:
        client.disconnect()
        client.loop_stop()
    rejected = sum(stats.rejected.values())
    print(f"record: {stats.rows} rows from {len(stats.devices)} device(s) "
          f"({stats.messages} messages, {rejected} rejected, {stats.dropped} dropped) "
          f"into {', '.join(stats.files) or 'no file (nothing arrived)'}")
    return 0


def _add_demo(sub) -> None:
    p = add_command(
        sub, "demo",
        "The whole product in about a minute: a broker (embedded unless --broker), a model "
        "trained on synthetic machine vibration, the daemon, simulated machines and a live "
        "view of the classifications with their accuracy.",
        "sigmoid-edge demo --devices 4 --duration 30",
    )
    add_client_args(p, broker_required=False)
    p.add_argument("--model", metavar="PATH",
                   help="use this model instead of training one (its channels must be x,y,z "
                        "and its labels the synthetic classes)")
    p.add_argument("--devices", type=int, default=4, metavar="N",
                   help="simulated machines (default 4)")
    p.add_argument("--duration", type=float, default=30.0, metavar="S",
                   help="seconds of streaming at most (default 30; less if the budget is short)")
    p.add_argument("--budget", type=float, default=55.0, metavar="S",
                   help="finish within about S seconds of start (default 55)")
    p.add_argument("--rate", type=float, default=100.0, metavar="HZ",
                   help="samples per second per machine (default 100)")
    p.add_argument("--format", choices=("object", "array", "batch"), default="object",
                   help="sensor payload format (default object)")
    p.add_argument("--train-seconds", type=float, default=60.0, metavar="S",
                   help="seconds of synthetic training data per recording (default 60)")
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic data (default 1)")
    p.add_argument("--out", default="demo-output", metavar="DIR",
                   help="where the model, logs, summary.json and report.png go "
                        "(default demo-output)")
    p.add_argument("--no-live", action="store_true",
                   help="print a status line every 2 s instead of redrawing a table")
    p.add_argument("--no-plot", action="store_true", help="do not write report.png")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edge.tools.demo import DemoError, DemoOptions, run_demo

    if args.devices < 1 or args.rate <= 0 or args.duration <= 0:
        return _fail("demo", ValueError("--devices, --rate and --duration must be positive"))
    if args.username or args.password_file or args.tls_ca:
        return _fail("demo", ValueError("the demo connects anonymously over plain MQTT; "
                                        "run simulate/record/run yourself for a secured broker"))
    opts = DemoOptions(out=Path(args.out), broker=args.broker,
                       model=Path(args.model) if args.model else None, devices=args.devices,
                       duration=args.duration, budget=args.budget, rate_hz=args.rate,
                       fmt=args.format, train_seconds=args.train_seconds, seed=args.seed,
                       mqtt_version=args.mqtt_version, live=False if args.no_live else None,
                       plot=not args.no_plot)
    try:
        summary = run_demo(opts)
    except (DemoError, RuntimeError, OSError) as exc:
        return _fail("demo", exc)
    except KeyboardInterrupt:  # before streaming started (Ctrl-C while streaming ends it)
        print("sigmoid-edge demo: interrupted", file=sys.stderr)
        return 130
    if summary["accuracy"] is None:
        print(f"demo: no classification could be scored ({summary['windows']} windows); "
              f"see {opts.out}/daemon.log", file=sys.stderr)
        return 1
    report = f"; report {summary['report']}" if "report" in summary else ""
    print(f"demo: accuracy {summary['accuracy']:.3f} ({summary['correct']} of "
          f"{summary['scored_windows']} windows) on {summary['devices']} devices, "
          f"{summary['messages_per_s']:.0f} msg/s for {summary['stream_seconds']:.0f} s; "
          f"total {summary['total_seconds']:.1f} s{report}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, sub = base_parser(
        "sigmoid-edge",
        "Run sigmoid-network classifiers on MQTT sensor streams (the Raspberry Pi side).",
    )
    _add_run(sub)
    _add_simulate(sub)
    _add_record(sub)
    _add_demo(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_parsed(parser, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
