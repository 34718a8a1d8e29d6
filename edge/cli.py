"""``sigmoid-edge``: the command line of the edge daemon.

Each subcommand has its own ``_add_<name>`` function that declares its arguments and an
example, and a handler that imports what it needs only when it runs, so that ``--help``
stays fast on a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import logging
import sys

from edge import __version__

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
    # (precedence: CLI > environment > file > defaults, see CONFIG_SCHEMA.md).
    p.add_argument("--config", metavar="FILE", help="TOML config file (CONFIG_SCHEMA.md)")
    p.add_argument("--model", metavar="PATH", help="the ONNX model file")
    p.add_argument("--broker", metavar="URL",
                   help="mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS "
                        "(default mqtt://localhost:1883)")
    p.add_argument("--client-id", help="MQTT client id (default sigmoid-edge-<node>)")
    p.add_argument("--qos", type=int, choices=(0, 1, 2), help="input subscription QoS "
                   "(default 1; outputs are QoS 1)")
    p.add_argument("--node", help="name under sigmoid-edge/<node>/ (default: host name)")
    p.add_argument("--input-topic", metavar="TEMPLATE",
                   help="input topic with {device} as one level (default sensors/{device}/#)")
    p.add_argument("--output-topic", metavar="TEMPLATE",
                   help="output topic (default edge/{device}/classification)")
    p.add_argument("--mqtt-version", choices=("5", "3.1.1"), help="protocol (default 5)")
    p.add_argument("--username", help="broker user; the password comes from the "
                   "SIGMOID_EDGE_PASSWORD environment variable or --password-file")
    p.add_argument("--password-file", metavar="FILE", help="file holding the broker password")
    p.add_argument("--tls-ca", metavar="FILE", help="CA bundle for mqtts:// (default: system)")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate for mqtts://")
    p.add_argument("--tls-key", metavar="FILE", help="client key for mqtts://")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default 1)")
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
    p.add_argument("--log-level", dest="run_log_level", type=str.lower, choices=LOG_LEVELS,
                   help="how much to log (default info)")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration and load the model, then exit")
    p.set_defaults(func=_run)


RUN_KEYS = (
    "config", "model", "broker", "client_id", "qos", "node", "input_topic", "output_topic",
    "mqtt_version", "username", "password_file", "tls_ca", "tls_cert", "tls_key", "threads",
    "hop", "max_devices", "queue_size", "stats_interval", "trusted_keys", "smoothing",
    "min_confidence", "on_change", "only_anomalies",
)


def _run(args: argparse.Namespace) -> int:
    from edge.config import ConfigError, load_config

    cli = {key: getattr(args, key, None) for key in RUN_KEYS}
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

    try:
        model = load_model(cfg.model, threads=cfg.threads)
        make_parser(model, cfg)
    except ModelError as e:
        print(f"sigmoid-edge: model error: {e}", file=sys.stderr)
        return 1
    if args.check_config:
        info = model.info
        print(f"config OK: model {info.name} {info.version} (sha256 {model.sha256[:12]}), "
              f"channels {list(info.channels)}, window {info.window}, "
              f"hop {cfg.hop or info.hop}, labels {list(info.labels)}; broker {cfg.broker}, "
              f"node {cfg.node}, input {cfg.input_topic}, output {cfg.output_topic}")
        return 0
    try:
        daemon = Daemon(cfg, model)
        return daemon.run()
    except MqttError as e:
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
    p.add_argument("--mqtt-version", choices=("3.1.1", "5"), default=mqtt_version,
                   help=f"MQTT protocol version (default: {mqtt_version})")


def client_kwargs(args: argparse.Namespace) -> dict:
    """Connection keyword arguments from :func:`add_client_args` options."""
    import os

    password = os.environ.get("SIGMOID_EDGE_PASSWORD")
    if args.password_file:
        with open(args.password_file, encoding="utf-8") as f:
            password = f.read().strip()
    return {"mqtt_version": args.mqtt_version, "username": args.username,
            "password": password, "tls_ca": args.tls_ca}


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
    p.add_argument("--format", choices=("object", "array", "batch"), default="object",
                   help="payload: one JSON object or array per sample, or batches "
                        "(default: object)")
    p.add_argument("--batch-seconds", type=float, default=0.1, metavar="S",
                   help="with --format batch, one message per device this often (default 0.1)")
    p.add_argument("--loop", action="store_true", help="start again when the data ends")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--seed", type=int, default=0, help="seed of --synthetic (default 0)")
    p.add_argument("--qos", type=int, choices=(0, 1, 2), default=0,
                   help="QoS of sample messages (labels always use 1; default 0)")
    p.add_argument("--topic", default="sensors/{device}/data",
                   help="topic template of samples (default: sensors/{device}/data)")
    p.add_argument("--label-topic", default="sim/{device}/label",
                   help="topic template of the true labels (default: sim/{device}/label)")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from edge import simulate

    try:
        source = simulate.make_source(args.data, synthetic_data=args.synthetic,
                                      rate_hz=args.rate, loop=args.loop, seed=args.seed)
        kwargs = client_kwargs(args)
    except (ValueError, OSError) as exc:  # SensorFileError is a ValueError
        return _fail("simulate", exc)
    try:
        client = simulate.connect(args.broker, **kwargs)
    except (ValueError, ConnectionError) as exc:
        return _fail("simulate", exc)
    stop = stop_on_signals()
    try:
        sim = simulate.Simulator(client, source, devices=args.devices, rate_hz=args.rate,
                                 fmt=args.format, batch_seconds=args.batch_seconds,
                                 topic=args.topic, label_topic=args.label_topic, qos=args.qos)
        names = [s.name for s in sim.streams]
        logging.getLogger("edge.simulate").info(
            "simulating %d device(s) %s at %g Hz, %s payloads on %s", len(names),
            ",".join(names[:8]) + ("..." if len(names) > 8 else ""), sim.rate_hz, args.format,
            args.topic)
        stats = sim.run(stop, duration=args.duration)
    except ValueError as exc:
        return _fail("simulate", exc)
    finally:
        client.disconnect()  # before loop_stop: the loop thread then ends at once
        client.loop_stop()
    print(f"simulate: {stats.messages} messages, {stats.samples} samples, "
          f"{stats.label_messages} label messages from {len(stats.per_device)} device(s) "
          f"in {stats.seconds:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, sub = base_parser(
        "sigmoid-edge",
        "Run sigmoid-network classifiers on MQTT sensor streams (the Raspberry Pi side).",
    )
    _add_run(sub)
    _add_simulate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_parsed(parser, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
