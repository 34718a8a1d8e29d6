"""SigmoidNetwork vs scikit-learn's MLPClassifier, side by side in one run.

Both get one hidden layer of 32 logistic units and are otherwise left at their defaults.
Features are standardised the same way for both (StandardScaler fitted on the training
split). Datasets: scikit-learn's digits, a 20k x 40 synthetic four-class problem, and the
shared UEA/UCR sets (BasicMotions, ItalyPowerDemand) flattened to one row per case.

Goal (issue 4): total fit time <= 0.25x scikit-learn's, with mean test accuracy no more
than 0.5 points below scikit-learn's.

    python bench/bench_network.py            # 5 seeds per dataset
    python bench/bench_network.py --quick    # 1 seed, smaller synthetic set
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.network import SigmoidNetwork  # noqa: E402

SHARED = Path("/work/shared/datasets")


def read_ts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Minimal reader for equal-length UEA/UCR ``.ts`` files: X [cases, channels * length].

    Private to this benchmark (the project's ``.ts`` reader lives with the data loaders);
    it handles exactly the layout of the shared files: ``@`` headers, then one case per
    line with channels separated by ``:`` and the class label last.
    """
    rows, labels = [], []
    in_data = False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower().startswith("@data")
            continue
        *channels, label = line.split(":")
        rows.append(np.concatenate([np.array(c.split(","), dtype=float) for c in channels]))
        labels.append(label)
    return np.array(rows), np.array(labels)


def datasets(quick: bool, shared: Path):
    """Yield ``(name, X_train, X_test, y_train, y_test)``."""
    from sklearn.datasets import load_digits, make_classification
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    yield ("digits", *train_test_split(X, y, test_size=0.25, stratify=y, random_state=0))
    n = 5000 if quick else 20000
    X, y = make_classification(n_samples=n, n_features=40, n_informative=20, n_redundant=10,
                               n_classes=4, random_state=0)
    yield (f"synthetic {n // 1000}k x 40, 4 classes",
           *train_test_split(X, y, test_size=0.25, stratify=y, random_state=0))
    for name in ("BasicMotions", "ItalyPowerDemand"):
        folder = shared / name
        if not folder.is_dir():
            print(f"(skipping {name}: {folder} not found)", file=sys.stderr)
            continue
        X_train, y_train = read_ts(folder / f"{name}_TRAIN.ts")
        X_test, y_test = read_ts(folder / f"{name}_TEST.ts")
        yield name, X_train, X_test, y_train, y_test


def timed_fit(model, X, y) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both warn when they hit their epoch limit
        start = time.perf_counter()
        model.fit(X, y)
        return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, a smaller synthetic set")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per dataset (default 5)")
    parser.add_argument("--shared", type=Path, default=SHARED, help="folder of the .ts sets")
    args = parser.parse_args(argv)
    seeds = range(args.seeds or (1 if args.quick else 5))

    import sklearn
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average {os.getloadavg()[0]:.1f}, seeds {list(seeds)}")
    print("| dataset | train x features | sklearn fit s | ours fit s | ratio "
          "| sklearn acc | ours acc | sklearn epochs | ours epochs |")
    print("|---|---|---|---|---|---|---|---|---|")
    totals = {"sk": 0.0, "ours": 0.0}
    accs = {"sk": [], "ours": []}
    for name, X_train, X_test, y_train, y_test in datasets(args.quick, args.shared):
        scaler = StandardScaler().fit(X_train)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
        row = {"sk": [0.0, [], []], "ours": [0.0, [], []]}
        for seed in seeds:
            models = {
                "sk": MLPClassifier(activation="logistic", hidden_layer_sizes=(32,),
                                    random_state=seed),
                "ours": SigmoidNetwork(hidden_layers=(32,), random_state=seed),
            }
            for key, model in models.items():
                row[key][0] += timed_fit(model, X_train, y_train)
                row[key][1].append(model.score(X_test, y_test))
                row[key][2].append(model.n_iter_)
        for key in row:
            totals[key] += row[key][0]
            accs[key].append(np.mean(row[key][1]))
        sk, ours = row["sk"], row["ours"]
        print(f"| {name} | {X_train.shape[0]} x {X_train.shape[1]} | {sk[0]:.3f} | "
              f"{ours[0]:.3f} | {ours[0] / sk[0]:.3f} | {100 * np.mean(sk[1]):.2f} | "
              f"{100 * np.mean(ours[1]):.2f} | {np.mean(sk[2]):.0f} | {np.mean(ours[2]):.0f} |",
              flush=True)
    ratio = totals["ours"] / totals["sk"]
    gap = 100 * (np.mean(accs["ours"]) - np.mean(accs["sk"]))
    print(f"| **total** | | {totals['sk']:.3f} | {totals['ours']:.3f} | **{ratio:.3f}** | "
          f"{100 * np.mean(accs['sk']):.2f} | {100 * np.mean(accs['ours']):.2f} | | |")
    met = ratio <= 0.25 and gap >= -0.5
    print(f"\ntotal fit time ratio {ratio:.3f} (goal <= 0.25), mean accuracy difference "
          f"{gap:+.2f} points (goal >= -0.5): {'MET' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    main()  # no sys.exit: `python -m bench` runs every script in one process
