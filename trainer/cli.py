"""``sigmoid-train``: fit, evaluate and inspect models on a workstation."""

from __future__ import annotations

import argparse
import sys

from edge.cli import add_command, base_parser, run_parsed


def _fail(command: str, message: str) -> int:
    print(f"sigmoid-train {command}: error: {message}", file=sys.stderr)
    return 1


def _add_keygen(sub) -> None:
    p = add_command(sub, "keygen", "Make an Ed25519 key pair for signing models.",
                    "sigmoid-train keygen --out ~/.sigmoid-edge")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory for signing.key (private, mode 0600) and signing.pub")
    p.add_argument("--force", action="store_true", help="replace existing key files")
    p.set_defaults(func=_keygen)


def _keygen(args) -> int:
    from trainer.signing import keygen

    try:
        pair = keygen(args.out, force=args.force)
    except (FileExistsError, OSError) as exc:
        return _fail("keygen", str(exc))
    print(f"wrote {pair.private_path} (keep it secret) and {pair.public_path} "
          f"(key id {pair.key_id}); give the daemon --trusted-key {pair.public_path}")
    return 0


def _add_sign(sub) -> None:
    p = add_command(sub, "sign", "Sign a model file; writes MODEL.sig beside it.",
                    "sigmoid-train sign model.int8.onnx --key ~/.sigmoid-edge/signing.key")
    p.add_argument("model", metavar="MODEL", help="the model file (.onnx)")
    p.add_argument("--key", required=True, metavar="KEY", help="signing.key from keygen")
    p.add_argument("--out", metavar="SIG", help="signature file (default: MODEL.sig)")
    p.set_defaults(func=_sign)


def _sign(args) -> int:
    from edge.signing import SignatureError, describe
    from trainer.signing import sign_file

    try:
        out, signature = sign_file(args.model, args.key, args.out)
    except SignatureError as exc:
        return _fail("sign", str(exc))
    except OSError as exc:
        return _fail("sign", f"{exc.filename}: {exc.strerror}")
    print(f"wrote {out}: {describe(signature)}")
    return 0


def _add_push(sub) -> None:
    p = add_command(
        sub, "push",
        "Sign a model and publish it to a daemon (sigmoid-edge/NODE/model, QoS 1).",
        "SIGMOID_EDGE_PASSWORD=... sigmoid-train push model.int8.onnx "
        "--broker mqtts://pi.local:8883 --node press-7 --key signing.key "
        "--username trainer --tls-ca ca.crt",
    )
    # No abbreviations: "--password SECRET" must be an error, not "--password-file SECRET".
    p.allow_abbrev = False
    p.add_argument("model", metavar="MODEL", help="the model file (.onnx)")
    p.add_argument("--broker", required=True, metavar="URL",
                   help="mqtt://host[:1883] or mqtts://host[:8883]")
    p.add_argument("--node", required=True, help="the daemon's node name (--node of the daemon)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--key", metavar="KEY", help="signing.key from keygen: sign now")
    how.add_argument("--sig", metavar="SIG",
                     help="push with an existing MODEL.sig instead (signed elsewhere with "
                          "'sigmoid-train sign'; the key never needs to be on this machine)")
    p.add_argument("--username", help="broker user name")
    p.add_argument("--password-file", metavar="FILE",
                   help="file whose first line is the broker password "
                        "(or set SIGMOID_EDGE_PASSWORD; never on the command line)")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificate of the broker (mqtts://)")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate (mutual TLS)")
    p.add_argument("--tls-key", metavar="FILE", help="client certificate's private key")
    p.add_argument("--retain", action="store_true",
                   help="retain the push so a daemon that connects later still gets it")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for the broker's acknowledgement (default: 30)")
    p.set_defaults(func=_push)


def _push(args) -> int:
    from edge.signing import SignatureError, describe
    from trainer.push import PushError, broker_settings, push_model, read_password

    try:
        settings = broker_settings(
            args.broker, username=args.username, password=read_password(args.password_file),
            tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
        )
        signature = push_model(args.model, args.key, args.node, settings, sig_path=args.sig,
                               retain=args.retain, timeout=args.timeout)
    except (PushError, SignatureError) as exc:
        return _fail("push", str(exc))
    print(f"pushed {describe(signature)} to sigmoid-edge/{args.node}/model")
    return 0


def _hidden(text: str) -> tuple[int, ...]:
    """``--hidden 64,32`` -> (64, 32); ``--hidden none`` (or "") -> () (logistic regression)."""
    if text.strip().lower() in ("", "none", "0"):
        return ()
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer sizes like 64,32 (or 'none'), got {text!r}"
        ) from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be >= 1, got {text!r}")
    return sizes


def _features(text: str) -> list[str]:
    from trainer.features.registry import parse_features

    try:
        return parse_features(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_fit(sub) -> None:
    p = add_command(
        sub, "fit",
        "Fit a model on a .ts or CSV file; write model.onnx, model.int8.onnx, report.json "
        "and report.png to DIR.",
        "sigmoid-train fit BasicMotions_TRAIN.ts --test BasicMotions_TEST.ts --out models/bm",
    )
    p.add_argument("train", metavar="TRAIN", help="training data: a UEA/UCR .ts file or a "
                   "CSV sensor log (ts, optional device and label, one column per channel)")
    p.add_argument("--test", metavar="TEST", help="test data, same format (only reported)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--hidden", type=_hidden, metavar="64,32",
                   help="hidden layer sizes, or 'none' for logistic regression "
                        "(default: chosen by validation)")
    p.add_argument("--features", type=_features, metavar="SPECS",
                   help="comma-separated feature families, e.g. stats,diff_stats,spectral,"
                        "raw:points=16 (default: chosen by validation)")
    p.add_argument("--window", type=_positive, metavar="N",
                   help="samples per window (CSV: required; .ts: resample every case to N; "
                        "default: the longest case)")
    p.add_argument("--hop", type=_positive, metavar="N",
                   help="samples between windows (CSV default: window/2; .ts: window)")
    p.add_argument("--name", help="model name (default: the data set's name)")
    p.add_argument("--version", default="1", dest="model_version",
                   help="model version string (default: 1)")
    p.set_defaults(func=_fit)


def _fit(args) -> int:
    from edge.sensorfiles import SensorFileError
    from trainer.data import load_dataset
    from trainer.fit import FitOptions, fit, write_outputs

    try:
        train = load_dataset(args.train, window=args.window, hop=args.hop)
        test = None
        if args.test:
            test = load_dataset(args.test, window=train.window, hop=train.hop,
                                channels=list(train.channels) if args.test.lower().endswith(
                                    ".csv") else None)
            if test.X.shape[2] != train.X.shape[2]:
                raise ValueError(f"{args.test}: {test.X.shape[2]} channel(s), but the "
                                 f"training data has {train.X.shape[2]}")
        options = FitOptions(features=args.features, hidden_layers=args.hidden,
                             seed=args.seed, name=args.name, version=args.model_version)
        result = fit(train, test, options)
        paths = write_outputs(args.out, result)
    except (SensorFileError, ValueError, FileNotFoundError) as exc:
        return _fail("fit", str(exc))
    r = result["report"]
    for split in ("train", "test"):
        if split in r["metrics"]["float"]:
            f, q = r["metrics"]["float"][split], r["metrics"]["int8"][split]
            print(f"{split:5s} accuracy float {f['accuracy']:.4f} int8 {q['accuracy']:.4f}  "
                  f"macro-F1 float {f['macro_f1']:.4f} int8 {q['macro_f1']:.4f}  "
                  f"agreement {r['int8_float_agreement'][split]:.4f}  (n={f['n']})")
    p = r["parameters"]
    print(f"features {','.join(p['features'])}; hidden {p['hidden_layers']}; "
          f"int8 {r['quantization']['chosen']}; "
          f"batch-1 latency float {r['latency']['float']['batch1_us']} us, "
          f"int8 {r['latency']['int8']['batch1_us']} us")
    print("wrote " + ", ".join(str(v) for v in paths.values()))
    return 0


def _add_evaluate(sub) -> None:
    p = add_command(sub, "evaluate",
                    "Score a model file on labelled data with onnxruntime (accuracy, "
                    "macro-F1, confusion matrix).",
                    "sigmoid-train evaluate models/bm/model.int8.onnx BasicMotions_TEST.ts --json")
    p.add_argument("model", metavar="MODEL", help="the model file (.onnx)")
    p.add_argument("data", metavar="DATA", help="a labelled .ts file or CSV sensor log")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_evaluate)


def _evaluate(args) -> int:
    import json

    from edge.contract import ContractError
    from edge.sensorfiles import SensorFileError
    from trainer.modelfile import evaluate

    try:
        result = evaluate(args.model, args.data)
    except (ContractError, SensorFileError, ValueError, FileNotFoundError) as exc:
        return _fail("evaluate", str(exc))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.model} on {args.data}: accuracy {result['accuracy']:.4f}, "
          f"macro-F1 {result['macro_f1']:.4f}, n {result['n']}")
    width = max(len(v) for v in result["labels"])
    print("confusion (rows true, columns predicted):")
    print(" " * (width + 2) + " ".join(f"{v[:6]:>6s}" for v in result["labels"]))
    for label, row in zip(result["labels"], result["confusion"], strict=True):
        print(f"  {label:>{width}s} " + " ".join(f"{n:6d}" for n in row))
    if result["unknown_labels"]:
        print(f"labels the model does not know (counted as errors): {result['unknown_labels']}")
    return 0


def _add_inspect(sub) -> None:
    p = add_command(sub, "inspect",
                    "Show a model file's metadata, inputs/outputs, size, op counts and "
                    "quantization.", "sigmoid-train inspect models/bm/model.int8.onnx")
    p.add_argument("model", metavar="MODEL", help="the model file (.onnx)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_inspect)


def _inspect(args) -> int:
    import json

    from edge.contract import ContractError
    from trainer.modelfile import format_inspect, inspect

    try:
        info = inspect(args.model)
    except (ContractError, FileNotFoundError) as exc:
        return _fail("inspect", str(exc))
    print(json.dumps(info, indent=2) if args.json else format_inspect(info))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, sub = base_parser(
        "sigmoid-train",
        "Fit sigmoid networks on sensor time series and export them as one ONNX file.",
    )
    _add_fit(sub)
    _add_evaluate(sub)
    _add_inspect(sub)
    _add_keygen(sub)
    _add_sign(sub)
    _add_push(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_parsed(parser, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
