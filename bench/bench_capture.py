"""Learning from the field: does retraining on captured windows fix a drifted stream?

Model A is fitted on synthetic vibration windows (``edge.tools.synthetic``, W=64, 3
channels, 4 classes). Then the sensor is remounted: x and z swap and the gain rises by
1.6 (a drifted stream). A streams a pool of drifted windows in time order through the
daemon's capture policy (:class:`edge.capture.Capture`, a budget of N captures per
device: the token bucket), the captures are stored as ``sigmoid-train collect`` stores
them, labelled with the truth (what a person does on the labelling page, through the same
``labels.json``), and ``fit --add`` (:func:`trainer.captures.add_to`) fits model B on A's
data plus the labelled captures. A and B (int8) are scored on held-out drifted windows.

Capture policies compared at the same budget: ``--capture uncertain`` (the first N windows
below 0.6 confidence), ``--capture all`` (the first N windows: a random sample of a shuffled
stream, what ``--capture-sample`` gives), and uncertain with ``--capture-sample 0.2``.

    python bench/bench_capture.py            # 3 seeds, budgets 20 and 40 (a few minutes)
    python bench/bench_capture.py --quick    # 1 seed, budget 40
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.capture import Capture  # noqa: E402
from edge.tools import synthetic  # noqa: E402
from tests.capture_helpers import store_windows  # noqa: E402
from trainer import sessions  # noqa: E402
from trainer.captures import Labels, add_to  # noqa: E402
from trainer.data import Dataset  # noqa: E402
from trainer.features.registry import parse_features  # noqa: E402
from trainer.fit import FitOptions, fit  # noqa: E402

WINDOW = 64
FEATURES = "stats,spectral"
POLICIES = {"uncertain": dict(mode="uncertain"), "all (random sample)": dict(mode="all"),
            "uncertain + sample 0.2": dict(mode="uncertain", sample=0.2)}


def drift(X: np.ndarray) -> np.ndarray:
    """The sensor remounted: x and z swapped, 1.6 times the gain."""
    return (X[:, :, [2, 1, 0]] * 1.6).astype(np.float32)


def accuracy(result, X: np.ndarray, y: np.ndarray) -> float:
    labels = np.array([str(c) for c in result.pipeline.classes_])
    probs = sessions.run(sessions.session(result.int8_model), X)
    return float((labels[probs.argmax(1)] == y).mean())


def run(seed: int, budget: int, work: Path) -> dict:
    options = FitOptions(features=parse_features(FEATURES), hidden_layers=(), seed=seed)
    X, y = synthetic.make_windows(40, window=WINDOW, seed=100 + seed)
    train = Dataset(X, y, synthetic.CHANNELS, WINDOW, WINDOW, synthetic.SAMPLE_RATE_HZ,
                    "synthetic", {"problem": "vibration"})
    Xd, yd = synthetic.make_windows(100, window=WINDOW, seed=200 + seed)
    Xd = drift(Xd)
    pool, ypool, test, ytest = Xd[:200], yd[:200], Xd[200:], yd[200:]
    a = fit(train, None, options)
    labels = [str(c) for c in a.pipeline.classes_]
    probs = sessions.run(sessions.session(a.int8_model), pool)
    row = {"A": accuracy(a, test, ytest), "A_original": accuracy(a, X, y)}
    for k, (name, policy) in enumerate(POLICIES.items()):
        capture = Capture(policy["mode"], "c/{device}", "bench", below=0.6, rate=budget,
                          sample=policy.get("sample", 0.0), seed=seed)
        idx, _ = capture.select(probs, None)
        taken = [i for i in idx.tolist() if capture.allow("dev1")]  # stream order, bucket
        root = work / f"seed{seed}-budget{budget}-policy{k}"
        ids = store_windows(root, pool[taken], probs[taken], labels, synthetic.CHANNELS)
        book = Labels(root)
        for cid, i in zip(ids, taken, strict=True):
            book.set(cid, str(ypool[i]))
        b = fit(add_to(train, [root]), None, options)
        row[name] = accuracy(b, test, ytest)
        row[name + " original"] = accuracy(b, X, y)
        row[name + " n"] = len(taken)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, one budget")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    seeds = range(1 if args.quick else 3)
    budgets = (40,) if args.quick else (20, 40)
    t0 = time.perf_counter()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for budget in budgets:
            rows[budget] = [run(s, budget, Path(tmp)) for s in seeds]
    print("<!-- begin markdown -->")
    print(f"Accuracy (int8) on 100 held-out drifted windows, mean over {len(seeds)} seed(s); "
          "'original': on A's own (undrifted) training windows. Model A: "
          f"{FEATURES}, logistic regression, 160 training windows; a pool of 200 drifted "
          "windows streamed through the capture policy.\n")
    print("| captures (budget) | policy | captures used | drifted accuracy | original |")
    print("|---|---|---|---|---|")
    for budget, rs in rows.items():
        print(f"| {budget} | none: model A | 0 | {np.mean([r['A'] for r in rs]):.3f} | "
              f"{np.mean([r['A_original'] for r in rs]):.3f} |")
        for name in POLICIES:
            print(f"| {budget} | {name} | {np.mean([r[name + ' n'] for r in rs]):.0f} | "
                  f"{np.mean([r[name] for r in rs]):.3f} | "
                  f"{np.mean([r[name + ' original'] for r in rs]):.3f} |")
    print(f"\n{time.perf_counter() - t0:.0f} s in all.")
    print("<!-- end markdown -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
