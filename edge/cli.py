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
    p.add_argument("--log-level", dest="run_log_level", type=str.lower, choices=LOG_LEVELS,
                   help="how much to log (default info)")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration and load the model, then exit")
    p.set_defaults(func=_run)


RUN_KEYS = (
    "config", "model", "broker", "client_id", "qos", "node", "input_topic", "output_topic",
    "mqtt_version", "username", "password_file", "tls_ca", "tls_cert", "tls_key", "threads",
    "hop", "max_devices", "queue_size", "stats_interval", "trusted_keys", "smoothing",
    "min_confidence", "on_change",
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


def build_parser() -> argparse.ArgumentParser:
    parser, sub = base_parser(
        "sigmoid-edge",
        "Run sigmoid-network classifiers on MQTT sensor streams (the Raspberry Pi side).",
    )
    _add_run(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_parsed(parser, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
