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


def build_parser() -> argparse.ArgumentParser:
    parser, _sub = base_parser(
        "sigmoid-edge",
        "Run sigmoid-network classifiers on MQTT sensor streams (the Raspberry Pi side).",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_parsed(parser, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
