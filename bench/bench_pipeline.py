"""Pipeline latency and accuracy: onnxruntime, 1 thread, default features, W=100, C=6.

Goals (issue 5): <= 30 us per call at batch 1 and <= 5 us per window at batch 64, float
and int8; BasicMotions test accuracy >= 0.975 and ItalyPowerDemand >= 0.96 with the
defaults; int8 vs float >= 99% label agreement and <= 1 point accuracy loss.

    python bench/bench_pipeline.py            # full run (about 2 minutes)
    python bench/bench_pipeline.py --quick    # smoke run (seconds)
    python bench/bench_pipeline.py --datasets DIR   # also every DIR/NAME/NAME_TRAIN.ts
    python bench/bench_pipeline.py --datasets DIR --only ACSF1,GunPoint --no-latency

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
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    import onnxruntime

    print(f"machine: {platform.machine()}, {platform.python_version()}, onnxruntime "
          f"{onnxruntime.__version__}, numpy {np.__version__}")
    min_time, repeats = (0.2, 3) if args.quick else (2.0, 7)
    if not args.no_latency:
        latency_table(min_time, repeats, args.quick)
    accuracy_table(args.quick, only=only)
    if args.datasets:
        names = []
        for train in sorted(args.datasets.glob("*/*_TRAIN.ts")):
            name = train.parent.name
            test = train.parent / f"{name}_TEST.ts"
            header = train.read_text(errors="replace")[:5000].lower()
            if train.stem == f"{name}_TRAIN" and test.exists() and "@classlabel true" in header:
                names.append(name)
        accuracy_table(args.quick, args.datasets, names, only)


if __name__ == "__main__":
    main()
