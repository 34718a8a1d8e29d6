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
    _add_simulate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_parsed(parser, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
