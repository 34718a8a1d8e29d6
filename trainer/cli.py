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


def build_parser() -> argparse.ArgumentParser:
    parser, sub = base_parser(
        "sigmoid-train",
        "Fit sigmoid networks on sensor time series and export them as one ONNX file.",
    )
    _add_keygen(sub)
    _add_sign(sub)
    _add_push(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_parsed(parser, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
