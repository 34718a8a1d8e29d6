"""Convolutional (MiniRocket-style) features: accuracy and latency for a few feature counts.

For each data set and feature count: fit time of the family, test accuracy of logistic
regression on top (our SigmoidNetwork with ``hidden_layers=()``, and scikit-learn's as a
reference), mean over seeds; numpy/onnxruntime parity; onnxruntime latency (1 thread) of
the conv family alone and of the whole float model (conv -> scaling -> logistic regression ->
probabilities), at batch 1 (per call) and batch 64 (per window).

    python bench/bench_conv.py            # shared UEA/UCR sets if present, 5 seeds
    python bench/bench_conv.py --quick    # 2 feature counts, 1 seed, fewer timing runs

Data: ``/work/shared/datasets`` (or ``--data DIR``) BasicMotions and ItalyPowerDemand in
``.ts`` format; without them, the synthetic vibration windows of ``edge.tools.synthetic``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnxruntime as ort  # noqa: E402

from edge.tools import synthetic  # noqa: E402
from trainer import sessions  # noqa: E402
from trainer.features.conv import ConvFeatures  # noqa: E402
from trainer.graph import GraphBuilder, float_input  # noqa: E402
from trainer.network import SigmoidNetwork  # noqa: E402

DATASETS = ("BasicMotions", "ItalyPowerDemand")
SIZES = (168, 336, 504, 1008, 2016, 4032)
QUICK_SIZES = (168, 1008)


def read_ts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Equal-length ``.ts`` file -> (X [N, W, C] float32, labels)."""
    try:
        from edge.tools.sensorfiles import read_ts as real_reader
    except ImportError:  # the pipeline's reader has not landed in this checkout
        real_reader = None
    if real_reader is not None:
        data = real_reader(path)
        return np.stack([np.asarray(s, np.float32) for s in data.series]), np.asarray(data.labels)
    xs, ys, in_data = [], [], False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith("@data"):
            in_data = True
        elif in_data:
            *channels, label = line.split(":")
            xs.append(np.array([[float(v) for v in c.split(",")] for c in channels]).T)
            ys.append(label)
    return np.stack(xs).astype(np.float32), np.array(ys)


def load(data_dir: Path) -> dict[str, tuple]:
    sets = {}
    for name in DATASETS:
        train, test = data_dir / name / f"{name}_TRAIN.ts", data_dir / name / f"{name}_TEST.ts"
        if train.exists() and test.exists():
            sets[name] = (*read_ts(train), *read_ts(test))
    if not sets:
        X, y = synthetic.make_windows(n_per_class=40, window=100, channels=3, seed=1)
        sets["synthetic vibration"] = (X[:80], y[:80], X[80:], y[80:])
    return sets


def build(features: ConvFeatures, mean=None, scale=None, net=None) -> bytes:
    """The conv family alone, or the whole float model when a scaler and network are given."""
    g = GraphBuilder("conv_bench")
    x = features.to_onnx(g, "window")
    shape = [None, features.n_features_out_]
    if net is not None:
        x = g.op("Sub", [x, g.const("scale_mean", mean)], name="scale_centre")
        x = g.op("Div", [x, g.const("scale_std", scale)], name="scale_divide")
        x = net.to_onnx(g, x)
        shape = [None, len(net.classes_)]
    out = g.rename(x, "out")
    window = [None, features.window_, features.channels_]
    return g.model([float_input("window", window)], [float_input(out, shape)]).SerializeToString()


def latency_us(sess, X: np.ndarray, batch: int, repeats: int) -> tuple[float, float]:
    """Microseconds per window: (median thread CPU time, best wall time) over blocks of calls.

    The best wall block is the least disturbed one (as ``timeit`` advises).
    """
    x = np.resize(X, (batch, *X.shape[1:]))
    t = sessions.timing(sess, x, repeats=max(1, repeats // 10), warmup=3,
                         calls=10)
    return t.cpu_median * 1e6 / batch, t.wall_best * 1e6 / batch


# Logistic regression trained to convergence: with hundreds of features and tens of windows
# the network's default stopping (5 flat epochs, alpha 1e-4) stops 1-2 points short.
LOGISTIC = dict(hidden_layers=(), alpha=3.0, max_epochs=3000, n_iter_no_change=50, tol=1e-7)


def logistic(F_tr, y_tr, seed):
    mean = F_tr.mean(axis=0)
    std = F_tr.std(axis=0) + 1e-6
    net = SigmoidNetwork(**LOGISTIC, random_state=seed).fit((F_tr - mean) / std, y_tr)
    return net, mean.astype(np.float32), std.astype(np.float32)


def sklearn_accuracy(F_tr, y_tr, F_te, y_te) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    return float((clf.fit(F_tr, y_tr).predict(F_te) == y_te).mean())


def run(sets, sizes, seeds, repeats) -> None:
    print(f"machine: {platform.machine()}, {platform.python_version()}, "
          f"onnxruntime {ort.__version__}, 1 thread")
    header = ("| data | features | fit s | acc ours | acc sklearn | flipped | pred agree "
              "| conv b1 us | conv b64 us/win | model b1 us | model b64 us/win |")
    print("(latency: median thread CPU time / best wall time, microseconds per window)")
    print(header)
    print("|---" * 11 + "|")
    for name, (X_tr, y_tr, X_te, y_te) in sets.items():
        for size in sizes:
            acc, ref, fit_s, flipped, agree = [], [], [], [], []
            for seed in range(seeds):
                t = time.perf_counter()
                conv = ConvFeatures(n_features=size, random_state=seed).fit(X_tr)
                F_tr = conv.transform(X_tr)
                fit_s.append(time.perf_counter() - t)
                F_te = conv.transform(X_te)
                net, mean, std = logistic(F_tr, y_tr, seed)
                acc.append(float((net.predict((F_te - mean) / std) == y_te).mean()))
                ref.append(sklearn_accuracy(F_tr, y_tr, F_te, y_te))
                conv_sess = sessions.session(build(conv))
                G_te = conv_sess.run(None, {"window": X_te})[0]
                flipped.append(float((np.abs(G_te - F_te) > 1e-6).mean()))
                model_sess = sessions.session(build(conv, mean, std, net))
                p_graph = model_sess.run(None, {"window": X_te})[0]
                p_numpy = net.predict_proba((F_te - mean) / std)
                agree.append(float((p_graph.argmax(1) == p_numpy.argmax(1)).mean()))
            lat = [latency_us(s, X_te, b, repeats if b == 1 else max(10, repeats // 10))
                   for s in (conv_sess, model_sess) for b in (1, 64)]
            print(f"| {name} | {conv.n_features_out_} | {np.mean(fit_s):.2f} "
                  f"| {np.mean(acc):.3f} | {np.mean(ref):.3f} | {max(flipped):.1e} "
                  f"| {min(agree):.3f} | " + " | ".join(f"{c:.0f} / {w:.0f}" for c, w in lat)
                  + " |", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 sizes, 1 seed, few timing runs")
    parser.add_argument("--data", type=Path, default=Path("/work/shared/datasets"))
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")],
                        help="comma-separated feature counts")
    args = parser.parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    seeds, repeats = (1, 50) if args.quick else (5, 500)
    run(load(args.data), sizes, seeds, repeats)


if __name__ == "__main__":
    main()
