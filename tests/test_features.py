"""Each feature family computes the same numbers in numpy (training) and in the ONNX graph."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge.tools import synthetic
from trainer.data import load_dataset
from trainer.features import DEFAULT_CANDIDATES, build_families, make_family, parse_features
from trainer.features.spectral import dft_matrices
from trainer.graph import GraphBuilder, float_input

DATA = Path(__file__).parent / "data"
SHARED = Path("/work/shared/datasets")  # optional: real UEA data when present


def run_graph(families, X: np.ndarray) -> np.ndarray:
    g = GraphBuilder("features")
    parts = [f.to_onnx(g, "window") for f in families]
    out = parts[0] if len(parts) == 1 else g.op("Concat", parts, name="features", axis=1)
    g.rename(out, "out")
    model = g.model([float_input("window", ["batch", X.shape[1], X.shape[2]])],
                    [float_input("out", ["batch", None])])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["out"], {"window": X})[0]


def numpy_features(families, X):
    return np.concatenate([f.transform(X) for f in families], axis=1)


def datasets():
    rng = np.random.default_rng(3)
    yield "random", (rng.normal(size=(16, 50, 3)) * [1, 10, 0.1] + [0, 9.8, -3]).astype(
        np.float32)
    yield "vibration", synthetic.make_windows(n_per_class=4, window=64, channels=3, seed=2)[0]
    yield "ts_fixture", load_dataset(DATA / "tiny_unequal.ts").X
    for name in ("BasicMotions", "ItalyPowerDemand"):
        path = SHARED / name / f"{name}_TRAIN.ts"
        if path.exists():
            yield name, load_dataset(path).X[:20]


SPECS = [
    ["stats"],
    ["diff_stats"],
    ["stats:stats=mean+std+min+max+rms+skew+kurt", "diff_stats:stats=rms+skew+kurt"],
    ["spectral"],
    ["diff_spectral"],
    ["spectral:bands=3:max_bins=5", "diff_spectral:bands=3:max_bins=5"],
    ["raw"],
    ["raw:points=none", "diff_raw:points=none"],
    ["raw:points=7"],
    # A pruned conv pool needs labels to fit: tests/test_pruned_conv.py checks its parity.
    *[list(c) for c in DEFAULT_CANDIDATES if not any(":pool=" in s for s in c)],
]


@pytest.mark.parametrize("specs", SPECS, ids=lambda s: ",".join(s))
def test_numpy_and_graph_agree(specs):
    for name, X in datasets():
        families = [f.fit(X) for f in build_families(specs)]
        want = numpy_features(families, X)
        got = run_graph(families, X)
        assert got.shape == want.shape, name
        assert len(families[0].feature_names(["a"] * X.shape[2])) == \
            families[0].transform(X[:1]).shape[1]
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4, err_msg=name)


def test_stats_are_the_textbook_statistics():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 40, 2)).astype(np.float32)
    f = make_family("stats:stats=mean+std+min+max+rms+skew+kurt").fit(X)
    out = f.transform(X).reshape(5, 2, 7)  # channel-major
    x = X[:, :, 1].astype(np.float64)
    c = x - x.mean(1, keepdims=True)
    np.testing.assert_allclose(out[:, 1, 0], x.mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, 1, 1], x.std(1), rtol=1e-5)
    np.testing.assert_allclose(out[:, 1, 2], x.min(1), rtol=1e-6)
    np.testing.assert_allclose(out[:, 1, 4], np.sqrt((x * x).mean(1)), rtol=1e-5)
    np.testing.assert_allclose(out[:, 1, 5], (c**3).mean(1) / x.std(1) ** 3, rtol=1e-3)
    np.testing.assert_allclose(out[:, 1, 6], (c**4).mean(1) / x.var(1) ** 2, rtol=1e-3)
    assert f.feature_names(["x", "y"])[7] == "mean(y)"


def test_diff_views_merge_into_one_family_and_difference_is_edge_padded():
    fams = build_families(["stats:stats=min", "spectral", "diff_stats:stats=min"])
    assert len(fams) == 2 and fams[0].views == ("x", "diff")
    X = np.array([[[0.0], [1.0], [3.0], [6.0]]], np.float32)
    f = fams[0].fit(X)
    # diff = 1, 1, 2, 3 (first step repeated): min 1; the signal's min is 0.
    assert f.transform(X).tolist() == [[0.0, 1.0]]
    assert f.feature_names(["x"]) == ["min(x)", "min(diff(x))"]


def test_spectral_band_energy_of_a_sine_and_of_its_difference():
    W, k = 64, 10
    t = np.arange(W)
    X = np.sin(2 * np.pi * k * t / W).astype(np.float32)[None, :, None]
    f = make_family("spectral:bands=32:max_bins=32").fit(X)
    both = make_family("diff_spectral:bands=32:max_bins=32").fit(X)
    energy = np.exp(f.transform(X)[0])
    assert energy.argmax() == k - 1  # bin k (bins start at 1) holds the sine
    # The Hann window spreads the sine over bins k-1..k+1; together they hold its mean square.
    assert energy.sum() == pytest.approx(0.5, rel=0.01)
    diff_energy = np.exp(both.transform(X)[0])
    gain = 4 * np.sin(np.pi * k / W) ** 2
    assert diff_energy[k - 1] == pytest.approx(gain * energy[k - 1], rel=1e-3)


def test_dft_bins_are_capped_for_long_windows():
    dft, bands = dft_matrices(400, 8, 24)
    assert dft.shape == (400, 48) and bands.shape == (48, 8)
    assert (bands.sum(axis=0) > 0).all()  # every band sees some bins


def test_registry_errors_are_precise():
    with pytest.raises(ValueError, match="unknown feature family 'wavelet'"):
        make_family("wavelet")
    with pytest.raises(ValueError, match="expected key=value"):
        make_family("spectral:8")
    with pytest.raises(ValueError, match="bad parameters for feature family 'raw'"):
        make_family("raw:size=3")
    with pytest.raises(ValueError, match="twice"):
        parse_features("stats,stats")
    with pytest.raises(ValueError, match="subset"):
        make_family("stats:stats=mean+median").fit(np.zeros((1, 4, 1), np.float32))


def test_plug_in_family_is_found_by_module_name(monkeypatch):
    """A module trainer/features/<name>.py with a class `name = "<name>"` plugs in (conv)."""

    class TimeMean:
        name = "timemean"

        def fit(self, windows):
            self.n_ = windows.shape[2]
            return self

        def transform(self, windows):
            return windows.mean(axis=1)

        def to_onnx(self, g, window):
            axes = g.const("tm_axes", np.array([1], np.int64))
            return g.op("ReduceMean", [window, axes], name="timemean", keepdims=0)

        def feature_names(self, channels):
            return [f"tm({c})" for c in channels]

        def describe(self):
            return {"name": self.name}

    module = types.ModuleType("trainer.features.timemean")
    TimeMean.__module__ = module.__name__
    module.TimeMean = TimeMean
    monkeypatch.setitem(sys.modules, module.__name__, module)
    X = np.random.default_rng(1).normal(size=(6, 20, 2)).astype(np.float32)
    fams = [f.fit(X) for f in build_families(["timemean", "diff_timemean"])]
    assert [f.name for f in fams] == ["timemean", "diff_timemean"]
    np.testing.assert_allclose(run_graph(fams, X), numpy_features(fams, X), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(fams[1].transform(X), (X[:, -1] - X[:, 0]) / 19, atol=1e-6)
