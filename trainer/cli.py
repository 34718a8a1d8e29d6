"""``sigmoid-train``: fit, evaluate and inspect models on a workstation."""

from __future__ import annotations

import argparse

from edge.cli import base_parser, run_parsed


def build_parser() -> argparse.ArgumentParser:
    parser, _sub = base_parser(
        "sigmoid-train",
        "Fit sigmoid networks on sensor time series and export them as one ONNX file.",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_parsed(parser, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
