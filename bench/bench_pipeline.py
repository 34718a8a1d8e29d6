"""Pipeline latency and accuracy: onnxruntime, 1 thread, default features, W=100, C=6.

Goals (issue 5): <= 30 us per call at batch 1 and <= 5 us per window at batch 64, float
and int8; BasicMotions test accuracy >= 0.975 and ItalyPowerDemand >= 0.96 with the
defaults; int8 vs float >= 99% label agreement and <= 1 point accuracy loss.

    python bench/bench_pipeline.py            # full run (about 2 minutes)
    python bench/bench_pipeline.py --quick    # smoke run (seconds)
    python bench/bench_pipeline.py --datasets DIR   # also every DIR/NAME/NAME_TRAIN.ts
    python bench/bench_pipeline.py --datasets DIR --only ACSF1,GunPoint --no-latency
    python bench/bench_pipeline.py --vs-minirocket [--datasets DIR] [--only ...]

``--vs-minirocket`` (needs the bench extra: ``pip install -e '.[bench]'``, aeon): on every
classification set aeon ships (or every set under ``--datasets``), our default fit (int8
model) and aeon's ``MiniRocketClassifier`` at its defaults, fitted on the same resampled
training windows and scored on the same test windows, side by side: test accuracy, fit
time (ours: selection + fit + quantization, as ``sigmoid-train fit``; aeon's: ``fit``,
after a numba warm-up on another set so compilation is not counted) and batch-1 latency
(ours: the int8 graph, reference microseconds; aeon's: ``predict`` of one window, wall).

Latency: each setting is timed in ``repeats`` rounds of ``min_time / repeats`` seconds
after a warm-up; the median and the best round are reported (the best is the least
disturbed by other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as sigmoid-train does (trainer/cli.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.tools import synthetic  # noqa: E402
from trainer import quantize, sessions  # noqa: E402
from trainer.data import Dataset, load_dataset  # noqa: E402
from trainer.export import build_model  # noqa: E402
from trainer.features.registry import DEFAULT_CANDIDATES  # noqa: E402
from trainer.fit import FitOptions, fit  # noqa: E402
from trainer.pipeline import Pipeline  # noqa: E402
from trainer.selection import NETWORK_CANDIDATES  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SHARED_FALLBACK = Path("/work/shared/datasets")


def synthetic_dataset(n_per_class: int, seed: int) -> Dataset:
    X, y = synthetic.make_windows(n_per_class=n_per_class, window=100, channels=6, seed=seed)
    return Dataset(X, y, tuple(f"c{i}" for i in range(6)), 100, 100, 100.0, "synthetic",
                   {"format": "synthetic", "cases": len(y)})


def latency_table(min_time: float, repeats: int, quick: bool) -> None:
    train = synthetic_dataset(40, 1)
    rows = []
    sets = DEFAULT_CANDIDATES[:1] if quick else DEFAULT_CANDIDATES
    for features in sets:
        net = dict(NETWORK_CANDIDATES[0])
        hidden = net.pop("hidden_layers")
        pipe = Pipeline(features, hidden_layers=hidden, random_state=0,
                        network_params=net).fit(train.X, train.y)
        common = dict(channels=list(train.channels), window=100, hop=100, name="bench",
                      version="1")
        float_model = build_model(pipe, **common)
        source = build_model(pipe, fold_scaling=False, **common)
        int8_model, rep = quantize.choose(source, train.X, train.X, train.y,
                                          [str(c) for c in pipe.classes_],
                                          reference_model=float_model)
        for kind, model in (("float", float_model), (f"int8 ({rep['chosen']})", int8_model)):
            sess = sessions.session(model)
            t1 = sessions.timing(sess, train.X[:1], min_time=min_time, repeats=repeats,
                                 warmup=50)
            t64 = sessions.timing(sess, train.X[:64], min_time=min_time, repeats=repeats,
                                  warmup=50)
            rows.append((",".join(features), kind, len(model.graph.node),
                         len(model.SerializeToString()), *(v * 1e6 for v in t1),
                         *(v * 1e6 / 64 for v in t64)))
    print("\n### Latency (W=100, C=6, logistic regression head, 1 thread)\n")
    print("| features | model | nodes | bytes | batch 1 us/call wall median / best / CPU "
          "| batch 64 us/window wall median / best / CPU |")
    print("|---|---|---:|---:|---:|---:|")
    for f, kind, nodes, size, m1, b1, c1, m64, b64, c64 in rows:
        print(f"| {f} | {kind} | {nodes} | {size:,} | {m1:.1f} / {b1:.1f} / {c1:.1f} "
              f"| {m64:.2f} / {b64:.2f} / {c64:.2f} |")


def accuracy_table(quick: bool, root: Path | None = None, names=None, only=None) -> None:
    root = root or (SHARED if SHARED.exists() else SHARED_FALLBACK)
    print(f"\n### Accuracy with the defaults (`sigmoid-train fit TRAIN --test TEST`), {root}\n")
    if not root.exists():
        print(f"(skipped: no shared datasets at {root})")
        return
    print("| data set | chosen features | hidden | test acc float | test acc int8 "
          "| agreement | int8 method | batch-1 us float / int8 | fit+select+quantize s |")
    print("|---|---|---|---:|---:|---:|---|---:|---:|")
    for name in names or ("BasicMotions", "ItalyPowerDemand"):
        if only and name not in only:
            continue
        train = load_dataset(root / name / f"{name}_TRAIN.ts")
        test = load_dataset(root / name / f"{name}_TEST.ts", window=train.window)
        t0 = time.perf_counter()
        r = fit(train, test, FitOptions(seed=0)).report
        took = time.perf_counter() - t0
        m = r["metrics"]
        print(f"| {name} | {','.join(r['parameters']['features'])} "
              f"| {r['parameters']['hidden_layers']} "
              f"| {m['float']['test']['accuracy']:.4f} | {m['int8']['test']['accuracy']:.4f} "
              f"| {r['int8_float_agreement']['test']:.4f} | {r['quantization']['chosen']} "
              f"| {r['latency']['float']['batch1_us']:.1f} / "
              f"{r['latency']['int8']['batch1_us']:.1f} | {took:.1f} |")
        if quick:
            break


def classification_sets(root: Path) -> list[str]:
    """Names of the ``root/NAME/NAME_TRAIN.ts`` classification sets with a test file."""
    names = []
    for train in sorted(root.glob("*/*_TRAIN.ts")):
        name = train.parent.name
        test = train.parent / f"{name}_TEST.ts"
        header = train.read_text(errors="replace")[:5000].lower()
        if train.stem == f"{name}_TRAIN" and test.exists() and "@classlabel true" in header:
            names.append(name)
    return names


def aeon_data_dir() -> Path:
    import aeon.datasets

    return Path(aeon.datasets.__file__).parent / "data"


def minirocket_table(root: Path, names, only, budget_us: float,
                     save: Path | None = None) -> None:
    """Our default fit (int8) vs aeon's MiniRocketClassifier at its defaults, per set.

    Our latency is in reference microseconds (:func:`trainer.sessions.reference_latency_us`),
    the unit of the budget, which does not move with the machine's load. ``save``: each
    set's int8 model and a test window are written to ``save/NAME.int8.onnx`` and
    ``save/NAME.window.npy`` (to time them elsewhere, e.g. under ``deploy/arm64`` emulation
    with ``bench/bench_runtime.py``-style timing).
    """
    import aeon
    from aeon.classification.convolution_based import MiniRocketClassifier

    print(f"\n### Our defaults (int8) vs aeon {aeon.__version__} MiniRocketClassifier, "
          f"{root}\n")
    print("| data set | train x W x C | chosen | kept / pool | CV acc chosen / pruned conv "
          "| ours int8 acc | MiniRocket acc "
          "| diff (points) | ours b1 ref us int8 | MiniRocket b1 us wall | ours fit s "
          "| of which pruning s | MiniRocket fit s | fit ratio |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    warm = load_dataset(root / names[0] / f"{names[0]}_TRAIN.ts")
    # Ten windows of each of two classes (a file sorted by label starts with one class).
    idx = np.concatenate([np.flatnonzero(warm.y == c)[:10] for c in np.unique(warm.y)[:2]])
    MiniRocketClassifier(random_state=0).fit(np.swapaxes(warm.X[idx], 1, 2), warm.y[idx])
    ours, theirs, ratios, over = [], [], [], []
    # Smallest first: a long run that is stopped still has most of its rows.
    for name in sorted(names, key=lambda n: (root / n / f"{n}_TRAIN.ts").stat().st_size):
        if only and name not in only:
            continue
        train = load_dataset(root / name / f"{name}_TRAIN.ts")
        test = load_dataset(root / name / f"{name}_TEST.ts", window=train.window)
        t0 = time.process_time()
        result = fit(train, test, FitOptions(seed=0, latency_budget_us=budget_us))
        our_fit = time.process_time() - t0
        r = result.report
        int8 = sessions.session(result.int8_model)
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            (save / f"{name}.int8.onnx").write_bytes(result.int8_model.SerializeToString())
            np.save(save / f"{name}.window.npy", test.X[:1])
        our_b1 = sessions.reference_latency_us(int8, test.X[0])
        clf = MiniRocketClassifier(random_state=0)
        t0 = time.process_time()
        clf.fit(np.swapaxes(train.X, 1, 2), train.y)
        mr_fit = time.process_time() - t0
        mr_acc = float((clf.predict(np.swapaxes(test.X, 1, 2)) == test.y).mean())
        one = np.swapaxes(test.X[:1], 1, 2)
        clf.predict(one)
        t0 = time.perf_counter()
        for _ in range(20):
            clf.predict(one)
        mr_b1 = (time.perf_counter() - t0) / 20 * 1e6
        acc = r["metrics"]["int8"]["test"]["accuracy"]
        pruning = r.get("pruning") or []
        kept = (" + ".join(f"{p['kept']} / {p['pool']}" for p in pruning) if pruning
                else "-")
        cands = r["parameters"]["selection"].get("candidates", [])
        chosen_cv = max((c["validation_accuracy"] for c in cands), default=float("nan"))
        conv_rows = [c for c in cands if "pruning" in c]
        conv_cv = max((c["validation_accuracy"] for c in conv_rows), default=float("nan"))
        conv_lat = max((c.get("batch1_latency_us", 0) for c in conv_rows), default=0)
        prune_s = sum(p.get("fit_cpu_s", 0.0) for c in conv_rows[:1] for p in c["pruning"])
        chosen_row = [c for c in cands if c["features"] == r["parameters"]["features"]
                      and c["hidden_layers"] == list(r["parameters"]["hidden_layers"])]
        if chosen_row:
            chosen_cv = chosen_row[0]["validation_accuracy"]
        ours.append(acc)
        theirs.append(mr_acc)
        ratios.append(our_fit / mr_fit)
        over.append(our_b1 > budget_us)
        print(f"| {name} | {len(train.y)} x {train.window} x {len(train.channels)} "
              f"| {','.join(r['parameters']['features'])} {r['parameters']['hidden_layers']} "
              f"| {kept} | {chosen_cv:.3f} / {conv_cv:.3f} ({conv_lat:.0f} us) "
              f"| {acc:.4f} | {mr_acc:.4f} | {100 * (acc - mr_acc):+.1f} "
              f"| {our_b1:.1f} | {mr_b1:.0f} | {our_fit:.1f} | {prune_s:.1f} | {mr_fit:.1f} "
              f"| {our_fit / mr_fit:.1f} |", flush=True)
    if ours:
        diff = 100 * (np.array(ours) - np.array(theirs))
        print(f"| **mean of {len(ours)}** | | | | | **{np.mean(ours):.4f}** "
              f"| **{np.mean(theirs):.4f}** | {diff.mean():+.1f} (worst {diff.min():+.1f}) "
              f"| {sum(over)} over {budget_us:g} us | | | | | median "
              f"{np.median(ratios):.1f} |")
        print("\n(fit times are process CPU seconds; ours include the selection over every "
              "default candidate and the int8 quantization.)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--datasets", type=Path, metavar="DIR",
                        help="also score the defaults on every DIR/NAME/NAME_TRAIN.ts "
                             "classification set (with NAME_TEST.ts beside it)")
    parser.add_argument("--only", metavar="NAMES",
                        help="comma-separated data set names: score only these")
    parser.add_argument("--no-latency", action="store_true",
                        help="skip the synthetic latency table")
    parser.add_argument("--vs-minirocket", action="store_true",
                        help="only the side-by-side table against aeon's MiniRocketClassifier "
                             "(bench extra), on aeon's sets or those under --datasets")
    parser.add_argument("--budget-us", type=float, default=100.0,
                        help="--latency-budget-us of our fits in --vs-minirocket")
    parser.add_argument("--save-models", type=Path, metavar="DIR",
                        help="--vs-minirocket: also write each set's int8 model to DIR")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    import onnxruntime

    print(f"machine: {platform.machine()}, {platform.python_version()}, onnxruntime "
          f"{onnxruntime.__version__}, numpy {np.__version__}")
    if args.vs_minirocket:
        root = args.datasets or aeon_data_dir()
        minirocket_table(root, classification_sets(root), only, args.budget_us,
                         args.save_models)
        return
    min_time, repeats = (0.2, 3) if args.quick else (2.0, 7)
    if not args.no_latency:
        latency_table(min_time, repeats, args.quick)
    accuracy_table(args.quick, only=only)
    if args.datasets:
        accuracy_table(args.quick, args.datasets, classification_sets(args.datasets), only)


if __name__ == "__main__":
    main()
