"""``sigmoid-train``: fit, evaluate and inspect models on a workstation."""

from __future__ import annotations

import argparse
import os
import sys

# The networks train on small matrices (mini-batches of <= 200 rows): OpenBLAS's threads
# cost more than they give, and on a busy 2-core machine they made one JapaneseVowels fit
# 8x slower (206 s vs 25 s). Must be set before numpy loads; the user's setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from edge.cli import add_command, base_parser, run_parsed  # noqa: E402
from edge.runtime import RUNTIMES  # noqa: E402


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
    p.add_argument("model", metavar="MODEL", help="the model file (.onnx)")
    p.add_argument("--node", required=True, help="the daemon's node name (--node of the daemon)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--key", metavar="KEY", help="signing.key from keygen: sign now")
    how.add_argument("--sig", metavar="SIG",
                     help="push with an existing MODEL.sig instead (signed elsewhere with "
                          "'sigmoid-train sign'; the key never needs to be on this machine)")
    _add_broker(p)
    p.add_argument("--retain", action="store_true",
                   help="retain the push so a daemon that connects later still gets it")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for the broker's acknowledgement (default: 30)")
    p.set_defaults(func=_push)


def _add_broker(p) -> None:
    """The broker options of push and fleet (the daemon's, minus the password flag)."""
    # No abbreviations: "--password SECRET" must be an error, not "--password-file SECRET".
    p.allow_abbrev = False
    p.add_argument("--broker", required=True, metavar="URL",
                   help="mqtt://host[:1883] or mqtts://host[:8883]")
    p.add_argument("--username", help="broker user name")
    p.add_argument("--password-file", metavar="FILE",
                   help="file whose first line is the broker password "
                        "(or set SIGMOID_EDGE_PASSWORD; never on the command line)")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificate of the broker (mqtts://)")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate (mutual TLS)")
    p.add_argument("--tls-key", metavar="FILE", help="client certificate's private key")


def _broker_settings(args):
    from trainer.push import broker_settings, read_password

    return broker_settings(
        args.broker, username=args.username, password=read_password(args.password_file),
        tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
    )


def _push(args) -> int:
    from edge.signing import SignatureError, describe
    from trainer.push import PushError, push_model

    try:
        settings = _broker_settings(args)
        signature = push_model(args.model, args.key, args.node, settings, sig_path=args.sig,
                               retain=args.retain, timeout=args.timeout)
    except (PushError, SignatureError) as exc:
        return _fail("push", str(exc))
    print(f"pushed {describe(signature)} to sigmoid-edge/{args.node}/model")
    return 0


def _add_fleet(sub) -> None:
    p = add_command(
        sub, "fleet", "Watch every daemon on a broker, and roll a model out to them in stages.",
        "sigmoid-train fleet status --broker mqtt://broker.local:1883",
    )
    fleet = p.add_subparsers(dest="fleet_command", metavar="{status,push}")
    p.set_defaults(func=lambda args: p.print_help() or 2)

    st = add_command(
        fleet, "status", "List every node seen: online/offline, model, uptime, rates, errors.",
        "sigmoid-train fleet status --broker mqtt://broker.local:1883 --json",
    )
    _add_broker(st)
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    st.add_argument("--wait", type=float, default=2.0, metavar="S",
                    help="seconds to listen for the nodes' retained messages (default 2)")
    st.set_defaults(func=_fleet_status)

    pu = add_command(
        fleet, "push",
        "Sign a model once and push it in waves: canaries first, halting at the first failure.",
        "sigmoid-train fleet push model.int8.onnx --broker mqtt://broker.local:1883 "
        "--key signing.key --all --canary 1 --soak 60",
    )
    pu.add_argument("model", metavar="MODEL", help="the model file (.onnx)")
    pu.add_argument("--key", required=True, metavar="KEY", help="signing.key from keygen")
    which = pu.add_mutually_exclusive_group(required=True)
    which.add_argument("--nodes", type=_names, metavar="A,B,C",
                       help="these nodes, in this order (the first --canary are the canaries)")
    which.add_argument("--all", action="store_true",
                       help="every node that has published its info, by name")
    pu.add_argument("--canary", type=_positive, default=1, metavar="N",
                    help="nodes in the first wave; each later wave is twice the one before "
                         "(default 1)")
    pu.add_argument("--soak", type=_non_negative, default=30.0, metavar="S",
                    help="seconds a wave must serve the model with inferences flowing, no "
                         "rollback and errors under --max-error-rate before the next wave "
                         "(default 30; 0 = accepted is enough)")
    pu.add_argument("--max-error-rate", type=_non_negative, default=0.01, metavar="R",
                    help="highest share of messages rejected or dropped during the soak "
                         "(default 0.01)")
    pu.add_argument("--timeout", type=_non_negative, default=60.0, metavar="S",
                    help="seconds to wait for each node to accept or refuse (default 60)")
    pu.add_argument("--dry-run", action="store_true", help="print the plan, push nothing")
    _add_broker(pu)
    pu.set_defaults(func=_fleet_push)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected node names like a,b,c, got {text!r}")
    return names


def _fleet_status(args) -> int:
    import json

    from trainer.fleet import fleet_status, format_table
    from trainer.push import PushError

    try:
        rows = fleet_status(_broker_settings(args), wait=args.wait)
    except PushError as exc:
        return _fail("fleet status", str(exc))
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print(format_table(rows))
    else:
        print(f"no sigmoid-edge node seen on {args.broker} within {args.wait:g} s")
    return 0


def _fleet_push(args) -> int:
    from edge.signing import SignatureError
    from trainer.fleet import fleet_push, report
    from trainer.push import PushError

    try:
        rollout = fleet_push(
            _broker_settings(args), args.model, args.key, nodes=None if args.all else args.nodes,
            canary=args.canary, soak=args.soak, max_error_rate=args.max_error_rate,
            timeout=args.timeout, dry_run=args.dry_run, say=lambda line: print(line, flush=True))
    except (PushError, SignatureError) as exc:
        return _fail("fleet push", str(exc))
    if args.dry_run:
        print("dry run: nothing was pushed")
        return 0
    print(report(rollout))
    return 0 if rollout.complete else 1


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


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


# trainer.selection.DEFAULT_LATENCY_BUDGET_US, repeated so that --help needs no numpy (a
# test keeps them equal).
LATENCY_BUDGET_US = 100.0


def _add_windowing(p) -> None:
    p.add_argument("--window", type=_positive, metavar="N",
                   help="samples per window (CSV: required; .ts: resample every case to N; "
                        "default: the longest case)")
    p.add_argument("--hop", type=_positive, metavar="N",
                   help="samples between windows (CSV default: window/2; .ts: window)")


def _add_identity(p) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--name", help="model name (default: the data file's name)")
    p.add_argument("--version", default="1", dest="model_version", metavar="VERSION",
                   help="model version string (default: 1)")


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
    p.add_argument("--hidden", type=_hidden, metavar="64,32",
                   help="hidden layer sizes, or 'none' for logistic regression "
                        "(default: chosen by validation)")
    p.add_argument("--features", type=_features, metavar="SPECS",
                   help="comma-separated feature families, e.g. stats,diff_stats,spectral,"
                        "raw:points=16 or conv:pool=10080:keep=auto; ':downsample=N' "
                        "computes a family on the mean of every N samples (default: chosen "
                        "by validation)")
    p.add_argument("--latency-budget-us", type=_non_negative, metavar="US",
                   default=LATENCY_BUDGET_US,
                   help="when choosing features by validation, only consider those whose "
                        "model runs a window within US reference microseconds (batch 1, 1 "
                        "thread, timed against a reference graph so the load of this machine "
                        f"does not matter; default {LATENCY_BUDGET_US:g}; 0: no budget); a pruned "
                        "conv pool (conv:pool=...) prunes until it fits")
    _add_windowing(p)
    _add_identity(p)
    p.add_argument("--anomaly", nargs="?", const="autoencoder", choices=DETECTOR_CHOICES,
                   metavar="DETECTOR",
                   help="also output anomaly_score (autoencoder, the default, or kmeans) "
                        "with a calibrated anomaly_threshold in the metadata")
    p.add_argument("--pretrain", choices=("rbm",),
                   help="rbm: greedy layer-wise RBM pretraining of the hidden layers before "
                        "backpropagation (a deep belief network)")
    p.add_argument("--unlabelled", metavar="FILE",
                   help="extra unlabelled windows (.ts or CSV, same channels) for RBM "
                        "pretraining; implies --pretrain rbm")
    p.add_argument("--add", action="append", metavar="DIR", default=[],
                   help="also train on the labelled windows of a capture directory "
                        "('sigmoid-train collect' + 'sigmoid-train label'; repeatable); "
                        "unlabelled and skipped ones are ignored, report.json counts them")
    p.set_defaults(func=_fit)


def _fit(args) -> int:
    from edge.tools.sensorfiles import SensorFileError
    from trainer.data import load_dataset
    from trainer.fit import FitOptions, fit, write_outputs

    try:
        train = load_dataset(args.train, window=args.window, hop=args.hop)
        if args.add:
            from trainer.captures import add_to

            train = add_to(train, args.add)
            c = train.summary["captures"]
            print(f"captures: {c['used']} labelled windows added ({c['unlabelled']} "
                  f"unlabelled, {c['skipped']} skipped, {c['mismatched']} of another "
                  f"window or channels left out)")
        test = _load_test(args.test, train)
        unlabelled = None
        if args.unlabelled:
            unlabelled = load_dataset(args.unlabelled, window=train.window, hop=train.hop,
                                      channels=_channels_for(args.unlabelled, train),
                                      labelled=False).X
        options = FitOptions(features=args.features, hidden_layers=args.hidden,
                             seed=args.seed, name=args.name, version=args.model_version,
                             anomaly=args.anomaly, unlabelled=unlabelled,
                             latency_budget_us=args.latency_budget_us,
                             pretrain=args.pretrain or ("rbm" if args.unlabelled else None))
        result = fit(train, test, options)
        paths = write_outputs(args.out, result)
    except (SensorFileError, ValueError, FileNotFoundError) as exc:
        return _fail("fit", str(exc))
    r = result.report
    for split in ("train", "test"):
        if split in r["metrics"]["float"]:
            f, q = r["metrics"]["float"][split], r["metrics"]["int8"][split]
            print(f"{split:5s} accuracy float {f['accuracy']:.4f} int8 {q['accuracy']:.4f}  "
                  f"macro-F1 float {f['macro_f1']:.4f} int8 {q['macro_f1']:.4f}  "
                  f"agreement {r['int8_float_agreement'][split]:.4f}  (n={f['n']})")
    p = r["parameters"]
    alpha = p["network"].get("alpha")
    print(f"features {','.join(p['features'])}; hidden {p['hidden_layers']}"
          + (f" (L2 alpha {alpha:g})" if alpha is not None else "") + "; "
          f"int8 {r['quantization']['chosen']}; "
          f"batch-1 latency float {r['latency']['float']['batch1_us']} us, "
          f"int8 {r['latency']['int8']['batch1_us']} us")
    print("wrote " + ", ".join(str(v) for v in paths.values()))
    return 0


DETECTOR_CHOICES = ("autoencoder", "kmeans")
CALIBRATION_CHOICES = ("blocked", "shuffled")  # trainer.calibration.CALIBRATIONS


def _channels_for(path: str, train) -> list[str] | None:
    """CSV files are read with the training channels, in their order; .ts files by position."""
    return list(train.channels) if path.lower().endswith(".csv") else None


def _load_test(path: str | None, train):
    """The ``--test`` windows, cut and ordered like ``train`` (None without ``--test``)."""
    from trainer.data import load_dataset

    if not path:
        return None
    test = load_dataset(path, window=train.window, hop=train.hop,
                        channels=_channels_for(path, train))
    if test.X.shape[2] != train.X.shape[2]:
        raise ValueError(f"{path}: {test.X.shape[2]} channel(s), but the "
                         f"training data has {train.X.shape[2]}")
    return test


def _add_fit_anomaly(sub) -> None:
    p = add_command(
        sub, "fit-anomaly",
        "Fit an anomaly model on normal data only: outputs anomaly_score and [normal, "
        "anomaly] probabilities, threshold in the metadata; writes model.onnx, "
        "report.json and report.png to DIR.",
        "sigmoid-train fit-anomaly normal_running.csv --window 128 --hop 64 "
        "--test labelled.csv --out models/pump-anomaly",
    )
    p.add_argument("data", metavar="DATA",
                   help="normal running: a CSV sensor log or .ts file (labels not needed)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    # k-means is the default: the same AUC as the autoencoder on the synthetic faults and
    # half its false alarms on the later part of real recordings (BENCHMARKS.md, issue 17).
    p.add_argument("--detector", choices=DETECTOR_CHOICES, default="kmeans",
                   help="kmeans (score = distance to the nearest centroid, the default) or "
                        "autoencoder (sigmoid layers; score = reconstruction error)")
    p.add_argument("--test", metavar="TEST",
                   help="labelled data to measure on: --normal-label is normal, every other "
                        "label an anomaly (AUC, detection and false-alarm rates in the report)")
    p.add_argument("--normal-label", metavar="LABEL",
                   help="train only on DATA's windows with this label (default: all windows "
                        "of DATA are normal); in --test, the normal label (default: normal)")
    _add_windowing(p)
    p.add_argument("--features", type=_features, metavar="SPECS",
                   help="feature families (default: stats,diff_stats,"
                        "spectral:bands=16:max_bins=64)")
    p.add_argument("--hidden", type=_hidden, metavar="32,8,32",
                   help="autoencoder hidden layers (default: one bottleneck layer of "
                        "min(16, features/2) units)")
    p.add_argument("--clusters", type=_positive, metavar="K",
                   help="k-means clusters (default: min(8, windows/10))")
    p.add_argument("--target-false-alarms", type=_false_alarm_rate, default=None,
                   metavar="RATE",
                   help="set the threshold for this false-alarm rate on later normal data: "
                        "a share of windows (default 0.01) or alarms per hour like 2/h "
                        "(needs time stamps: converted with the hop and sample rate)")
    p.add_argument("--quantile", type=float, default=None, metavar="Q",
                   help="instead of --target-false-alarms: threshold = this quantile of a "
                        "log-normal fitted to the out-of-fold scores of the normal windows")
    p.add_argument("--calibration", choices=CALIBRATION_CHOICES, default="blocked",
                   help="out-of-fold scores from contiguous blocks in time per device "
                        "(blocked, the default: the threshold sees drift) or from shuffled "
                        "windows (the rule before; optimistic on real recordings)")
    _add_identity(p)
    p.set_defaults(func=_fit_anomaly)


def _false_alarm_rate(text: str) -> tuple[float, str]:
    """``0.01`` (per window) or ``2/h`` (per hour) -> (value, unit)."""
    per_hour = text.strip().lower().endswith("/h")
    try:
        value = float(text.strip()[:-2] if per_hour else text)
    except ValueError:
        value = float("nan")
    if per_hour and value > 0:
        return value, "hour"
    if not per_hour and 0 < value < 1:
        return value, "window"
    raise argparse.ArgumentTypeError(
        f"expected a share of windows in (0, 1) like 0.01, or alarms per hour like 2/h, "
        f"got {text!r}")


def per_window_rate(rate: tuple[float, str], hop: int, sample_rate_hz: float | None) -> float:
    """A ``--target-false-alarms`` value as a share of windows."""
    value, unit = rate
    if unit == "window":
        return value
    if not sample_rate_hz:
        raise ValueError("--target-false-alarms per hour needs the sample rate: a CSV log "
                         "with time stamps (or give a share of windows, like 0.01)")
    windows_per_hour = 3600.0 * sample_rate_hz / hop
    share = value / windows_per_hour
    if not share < 1:
        raise ValueError(f"--target-false-alarms {value:g}/h is {share:.3g} of the "
                         f"{windows_per_hour:.0f} windows per hour; use fewer alarms per hour")
    return share


def _fit_anomaly(args) -> int:
    from edge.tools.sensorfiles import SensorFileError
    from trainer.calibration import DEFAULT_TARGET_FALSE_ALARMS
    from trainer.data import load_dataset
    from trainer.unsupervised import fit_anomaly, write

    try:
        train = load_dataset(args.data, window=args.window, hop=args.hop, labelled=False)
        test = _load_test(args.test, train)
        target = per_window_rate(args.target_false_alarms or (DEFAULT_TARGET_FALSE_ALARMS,
                                                              "window"),
                                 train.hop, train.sample_rate_hz)
        if args.quantile is not None and args.target_false_alarms is not None:
            raise ValueError("give either --target-false-alarms or --quantile, not both")
        result = fit_anomaly(train, test, detector=args.detector, features=args.features,
                             hidden_layers=args.hidden or (), n_clusters=args.clusters,
                             target_false_alarms=target, quantile=args.quantile,
                             calibration=args.calibration,
                             normal_label=args.normal_label, seed=args.seed, name=args.name,
                             version=args.model_version)
        paths = write(args.out, result)
    except (SensorFileError, ValueError, FileNotFoundError) as exc:
        return _fail("fit-anomaly", str(exc))
    r = result["report"]
    print(f"{args.detector} on {r['parameters']['n_features']} features of "
          f"{r['data']['train'].get('windows', len(train.X))} normal windows; "
          f"anomaly_threshold {r['threshold']:.5g} ({r['anomaly']['threshold_rule']})")
    print(f"expected false alarms on later normal data: {r['expected_false_alarm_rate']:.4f} "
          f"per window ({r['expected_false_alarm_rate_method']})")
    if "test" in r:
        t = r["test"]
        parts = [f"{k} {t[k]:.4f}" for k in ("auc", "detection_rate", "false_alarm_rate")
                 if t[k] is not None]
        print(f"test ({t['normal_windows']} normal, {t['anomaly_windows']} anomalous windows): "
              + ", ".join(parts))
    print(f"batch-1 latency {r['latency']['batch1_us']} us")
    print("wrote " + ", ".join(str(v) for v in paths.values()))
    return 0


def _add_cluster(sub) -> None:
    p = add_command(
        sub, "cluster",
        "Cluster unlabelled windows with k-means: outputs cluster, soft assignments "
        "(probabilities over cluster_0..) and anomaly_score; writes model.onnx, "
        "report.json and report.png (a 2-D projection coloured by cluster) to DIR.",
        "sigmoid-train cluster recording.csv --window 128 --k 4 --out models/modes",
    )
    p.add_argument("data", metavar="DATA", help="a CSV sensor log or .ts file (labels optional)")
    p.add_argument("--k", required=True, type=_positive, metavar="N", help="number of clusters")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    _add_windowing(p)
    p.add_argument("--features", type=_features, metavar="SPECS",
                   help="feature families (default: stats,diff_stats,"
                        "spectral:bands=16:max_bins=64)")
    _add_identity(p)
    p.set_defaults(func=_cluster)


def _cluster(args) -> int:
    from edge.tools.sensorfiles import SensorFileError
    from trainer.data import load_dataset
    from trainer.unsupervised import fit_clusters, write

    try:
        data = load_dataset(args.data, window=args.window, hop=args.hop, labelled=False)
        result = fit_clusters(data, n_clusters=args.k, features=args.features, seed=args.seed,
                              name=args.name, version=args.model_version)
        paths = write(args.out, result)
    except (SensorFileError, ValueError, FileNotFoundError) as exc:
        return _fail("cluster", str(exc))
    for name, info in result["report"]["clusters"].items():
        labels = info.get("labels")
        found = f"  labels in the file: {labels}" if labels else ""
        print(f"{name}: {info['windows']} windows{found}")
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
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="what runs the model: onnxruntime, numpy (what a Pi without "
                        "onnxruntime runs, for parity checks) or auto (default: onnxruntime "
                        "when installed)")
    p.set_defaults(func=_evaluate)


def _evaluate(args) -> int:
    import json

    from edge.contract import ContractError
    from edge.runtime import RuntimeUnavailable
    from edge.tools.sensorfiles import SensorFileError
    from trainer.modelfile import evaluate

    try:
        result = evaluate(args.model, args.data, runtime=args.runtime)
    except (ContractError, SensorFileError, ValueError, FileNotFoundError,
            RuntimeUnavailable) as exc:
        return _fail("evaluate", str(exc))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.model} on {args.data} ({result['runtime']} runtime): accuracy "
          f"{result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f}, n {result['n']}")
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


def _add_collect(sub) -> None:
    from edge.cli import add_client_args

    p = add_command(
        sub, "collect",
        "Store the windows daemons capture (run --capture) in a capture directory: one "
        "file per window and an index; safe to stop and restart (persistent session).",
        "sigmoid-train collect --broker mqtt://pi.local:1883 --out captures/",
    )
    add_client_args(p, mqtt_version="5")
    p.add_argument("--out", required=True, metavar="DIR", help="the capture directory")
    p.add_argument("--nodes", nargs="+", metavar="NODE",
                   help="only these daemons' captures (default: every node's)")
    p.add_argument("--client-id",
                   help="MQTT client id of the persistent session (default: one per --out)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.set_defaults(func=_collect)


def _collect(args) -> int:
    from edge.cli import client_kwargs, stop_on_signals
    from edge.credentials import PasswordFileError
    from edge.mqtt import MqttError
    from trainer.captures import CaptureError, CaptureStore
    from trainer.collect import Collector

    stop = stop_on_signals()
    try:
        store = CaptureStore(args.out)
        collector = Collector(store, args.broker, nodes=args.nodes,
                              client_id=args.client_id or "", **client_kwargs(args))
        collector.start()
    except (MqttError, CaptureError, PasswordFileError, OSError) as exc:
        return _fail("collect", str(exc))
    print(f"collecting captures into {args.out} ({len(store)} there already); Ctrl-C to "
          "stop", flush=True)
    stop.wait(args.duration)
    collector.stop()
    s = collector.stats
    print(f"stored {s.stored} new captures ({s.duplicates} duplicates, {s.rejected} rejected); "
          f"{len(store)} in {args.out}")
    return 0


def _add_label(sub) -> None:
    p = add_command(
        sub, "label",
        "Label the windows of a capture directory in a browser: a local page shows one "
        "window at a time (hardest first); keys 1-9 label, s skips, n adds a label.",
        "sigmoid-train label captures/ --labels normal,imbalance,misalignment",
    )
    p.add_argument("dir", metavar="DIR", help="a capture directory (sigmoid-train collect)")
    p.add_argument("--port", type=int, default=8765, help="port of the page (default 8765)")
    p.add_argument("--labels", metavar="A,B,C",
                   help="labels to offer first (the models' labels and new ones follow)")
    p.add_argument("--host", nargs="?", const="0.0.0.0", default="127.0.0.1",
                   help="listen on this address instead of 127.0.0.1 (no value: all "
                        "interfaces); the page has no login, so only on a trusted network")
    p.set_defaults(func=_label)


def _label(args) -> int:
    from pathlib import Path

    from trainer.captures import INDEX, CaptureError
    from trainer.label import serve

    if not (Path(args.dir) / INDEX).exists():
        return _fail("label", f"{args.dir}: no {INDEX}; collect captures into it first with "
                              "'sigmoid-train collect --out DIR'")
    labels = [v.strip() for v in args.labels.split(",") if v.strip()] if args.labels else []
    try:
        serve(args.dir, host=args.host, port=args.port, labels=labels)
    except (CaptureError, OSError) as exc:
        return _fail("label", str(exc))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, sub = base_parser(
        "sigmoid-train",
        "Fit sigmoid networks on sensor time series and export them as one ONNX file.",
    )
    _add_fit(sub)
    _add_fit_anomaly(sub)
    _add_cluster(sub)
    _add_evaluate(sub)
    _add_inspect(sub)
    _add_keygen(sub)
    _add_sign(sub)
    _add_push(sub)
    _add_fleet(sub)
    _add_collect(sub)
    _add_label(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_parsed(parser, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
