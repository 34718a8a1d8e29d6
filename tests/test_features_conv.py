"""MiniRocket-style convolutional features: recipe, determinism, hand case, numpy/ONNX parity."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.linear_model import LogisticRegression

from trainer.features import conv as conv_module
from trainer.features.conv import (
    GAP_SPLIT,
    KERNELS,
    ConvFeatures,
    fit_dilations,
    golden_quantiles,
    nudged_quantiles,
)
from trainer.graph import GraphBuilder, float_input

# Features that differ between numpy and onnxruntime by more than float noise may be at most
# this fraction: a comparison can flip only when an output lies within rounding of a bias.
MAX_FLIPPED_FRACTION = 1e-3


def session(features: ConvFeatures) -> ort.InferenceSession:
    g = GraphBuilder("conv_only")
    out = g.rename(features.to_onnx(g, "window"), "features")
    model = g.model(
        [float_input("window", [None, features.window_, features.channels_])],
        [float_input("features", [None, features.n_features_out_])],
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    assert out == "features"
    return sess


def graph_features(features: ConvFeatures, x: np.ndarray) -> np.ndarray:
    return session(features).run(None, {"window": x.astype(np.float32)})[0]


def flipped_fraction(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.abs(a - b) > 1e-6).mean())


def flat_segments(n: int, w: int, c: int, seed: int) -> np.ndarray:
    """Piecewise-constant signals with large odd levels (like appliance power, ACSF1)."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.integers(1, w, size=(n, c, 4)), axis=-1)
    levels = rng.normal(100.1, 37.3, size=(n, c, 5))
    t = np.arange(w)
    segment = (t[None, None, :, None] >= cuts[:, :, None, :]).sum(-1)  # [n, c, w]
    x = np.take_along_axis(levels, segment, axis=-1)
    return x.transpose(0, 2, 1).astype(np.float32)


def float64_features(features: ConvFeatures, x: np.ndarray) -> np.ndarray:
    """The same features computed in float64: another summation, as another CPU would do."""
    x = x.astype(np.float64)
    parts = [features.banks_["conv"].transform(x)]
    if "conv_diff" in features.banks_:
        parts.append(features.banks_["conv_diff"].transform(np.diff(x, axis=1)))
    return np.concatenate(parts, axis=1)


# ---------------------------------------------------------------- the recipe


def test_the_84_kernels():
    assert KERNELS.shape == (84, 9)
    assert len({tuple(k) for k in KERNELS}) == 84
    np.testing.assert_array_equal(KERNELS.sum(axis=1), 0)  # 3 x 2 - 6 x 1
    np.testing.assert_array_equal((KERNELS == 2).sum(axis=1), 3)
    np.testing.assert_array_equal((KERNELS == -1).sum(axis=1), 6)


def test_dilations_follow_the_paper():
    # W = 100, 12 features per kernel: floor(2 ** linspace(0, log2(99 / 8), 12)) =
    # 1 1 1 1 2 3 3 4 6 7 9 12 -> unique with counts.
    dilations, per = fit_dilations(100, 12)
    np.testing.assert_array_equal(dilations, [1, 2, 3, 4, 6, 7, 9, 12])
    np.testing.assert_array_equal(per, [4, 1, 2, 1, 1, 1, 1, 1])
    # More features than the 32-dilation cap: the multiplier spreads them, remainder first.
    dilations, per = fit_dilations(24, 119)
    np.testing.assert_array_equal(dilations, [1, 2])
    assert per.sum() == 119
    # A window shorter than a kernel's span still gets dilation 1.
    np.testing.assert_array_equal(fit_dilations(5, 3)[0], [1])


def test_golden_quantiles():
    np.testing.assert_allclose(golden_quantiles(3), [0.6180340, 0.2360680, 0.8541020], atol=1e-6)


# -------------------------------------------------------------- bias fitting


def test_nudged_quantiles_avoid_ties_and_track_quantiles():
    rng = np.random.default_rng(3)
    continuous = rng.normal(size=(1, 500))
    q = rng.uniform(size=(1, 20))
    tol = np.array([1e-9])
    b = nudged_quantiles(continuous, q, tol)
    s = np.sort(continuous[0])
    # Within one rank of the interpolated quantile, and strictly between two values.
    ranks = np.searchsorted(s, b[0])
    assert np.all(np.abs(ranks - (q[0] * 499 + 0.5)) <= 1.0)
    assert not np.isin(b[0], s).any()

    # Half the outputs are an exact tie at 0 (a flat segment); no bias may sit on it.
    tied = np.concatenate([np.zeros(50), np.linspace(1, 2, 50)])[None]
    b = nudged_quantiles(tied, np.array([[0.1, 0.3, 0.45, 0.6]]), np.array([1e-6]))
    assert np.all(np.abs(b) >= GAP_SPLIT - 1e-12)  # inside the gap between 0 and 1.0
    assert b[0, 0] == b[0, 2] == pytest.approx(GAP_SPLIT)

    # Not the middle of a gap: between 0 and 2v the middle is v, a value other windows take.
    lattice = np.array([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0]])
    b = nudged_quantiles(lattice, np.array([[0.5]]), np.array([1e-6]))
    assert b[0, 0] == pytest.approx(2 * GAP_SPLIT) and abs(b[0, 0] - 1.0) > 0.2

    # Values within tol of each other are one run: rounding noise never splits a tie.
    noisy = np.concatenate([np.array([1e-9, -1e-9, 0.0] * 10), [5.0]])[None]
    b = nudged_quantiles(noisy, np.array([[0.5]]), np.array([1e-6]))
    assert b[0, 0] == pytest.approx(1e-9 + GAP_SPLIT * (5.0 - 1e-9))

    # A constant output gets a bias just above or below it, by the quantile's side.
    const = np.full((1, 8), 3.0)
    b = nudged_quantiles(const, np.array([[0.2, 0.8]]), np.array([0.01]))
    np.testing.assert_allclose(b, [[2.99, 3.01]])


def test_one_kernel_by_hand():
    # W = 9: one dilation (1); 84 features = one bias per kernel; kernel 0 (twos at
    # positions 0, 1, 2) is zero-padded (even kernel at dilation index 0) and comes first.
    x = np.zeros((1, 9, 1), np.float32)
    x[0, 4, 0], x[0, 5, 0] = 1.0, -1.0  # mean 0, so centring changes nothing
    features = ConvFeatures(n_features=84, diff=False, random_state=0).fit(x)
    bank = features.banks_["conv"]
    np.testing.assert_array_equal(bank.dilations, [1])
    assert bank.padded[0, 0] and not bank.padded[0, 1]
    # out[t] = sum_j w[j] x[t + j - 4] = w[8 - t] - w[9 - t]  ->  [-1, 0, 0, 0, 0, 0, 3, 0, 0].
    # Quantile 0.618 is rank 4.94 of [-1, 0 x 7, 3]: inside the run of zeros, so the paper's
    # bias would be exactly 0 (a tie). The nearest gap is 0 | 3 (rank 7.5, against 0.5 for
    # -1 | 0): bias 0 + 0.382 x 3 = 1.146.
    assert bank.biases[0][0, 0] == pytest.approx(3 * GAP_SPLIT)
    assert features.transform(x)[0, 0] == pytest.approx(1 / 9)  # only t = 6 is above 1.146
    assert features.transform(2 * x)[0, 0] == pytest.approx(1 / 9)  # 6 > 1.146
    assert features.transform(0.3 * x)[0, 0] == 0.0  # 0.9 < 1.146
    assert graph_features(features, 0.3 * x)[0, 0] == 0.0
    assert graph_features(features, x)[0, 0] == pytest.approx(1 / 9)


# ---------------------------------------------------------- shapes, seeds, errors


def test_deterministic_given_seed(vibration):
    X, _ = vibration
    a = ConvFeatures(n_features=336, random_state=5).fit(X)
    b = ConvFeatures(n_features=336, random_state=5).fit(X)
    c = ConvFeatures(n_features=336, random_state=6).fit(X)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    for key in a.banks_:
        for ba, bb in zip(a.banks_[key].biases, b.banks_[key].biases, strict=True):
            np.testing.assert_array_equal(ba, bb)
    assert not np.array_equal(a.transform(X), c.transform(X))


@pytest.mark.parametrize(
    ("n_features", "diff", "expected", "banks"),
    [(84, True, 84, ["conv"]), (500, True, 420, ["conv", "conv_diff"]),
     (1008, False, 1008, ["conv"]), (1008, True, 1008, ["conv", "conv_diff"])],
)
def test_shapes_and_names(vibration, n_features, diff, expected, banks):
    X, _ = vibration
    features = ConvFeatures(n_features=n_features, diff=diff).fit(X)
    F = features.transform(X[:7])
    assert F.shape == (7, expected) and F.dtype == np.float32
    assert features.n_features_out_ == expected
    assert list(features.banks_) == banks
    assert np.all((F >= 0) & (F <= 1))
    names = features.feature_names(["x", "y", "z"])
    assert len(names) == expected == len(set(names))
    assert names[0].startswith("conv_d1_k0_")
    described = json.loads(json.dumps(features.describe()))
    assert described["n_features"] == expected and described["family"] == "conv"


def test_channel_subsets(vibration):
    rng = np.random.default_rng(0)
    wide = rng.normal(size=(20, 40, 12)).astype(np.float32)
    features = ConvFeatures(n_features=1008, random_state=2).fit(wide)
    for bank in features.banks_.values():
        counts = bank.channel_mask.sum(axis=-1)
        assert counts.min() == 1 and counts.max() <= 9  # at most min(C, 9) as in the paper
        assert len(np.unique(counts)) > 2
    uni = ConvFeatures(n_features=168).fit(vibration[0][..., :1])
    assert all(b.channel_mask.all() for b in uni.banks_.values())


def test_clear_errors(vibration):
    X, _ = vibration
    with pytest.raises(ValueError, match="at least 84"):
        ConvFeatures(n_features=50).fit(X)
    with pytest.raises(ValueError, match=r"\[N, window, channels\]"):
        ConvFeatures().fit(X[0])
    bad = X.copy()
    bad[0, 3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ConvFeatures().fit(bad)
    with pytest.raises(RuntimeError, match="not fitted"):
        ConvFeatures().transform(X)
    features = ConvFeatures(n_features=168).fit(X)
    with pytest.raises(ValueError, match="fitted on"):
        features.transform(X[:, :32])


# ------------------------------------------------------------ numpy vs ONNX


@pytest.mark.parametrize("diff", [True, False])
def test_parity_random_data_and_predictions(vibration, diff):
    X, y = vibration
    features = ConvFeatures(n_features=1008, diff=diff, random_state=1).fit(X[:60])
    F_np = features.transform(X)
    F_graph = graph_features(features, X)
    assert flipped_fraction(F_np, F_graph) <= MAX_FLIPPED_FRACTION
    np.testing.assert_allclose(F_np, F_graph, atol=0.02)  # one flip moves a PPV by 1/W
    clf = LogisticRegression(max_iter=2000).fit(F_np[:60], y[:60])
    np.testing.assert_array_equal(clf.predict(F_np), clf.predict(F_graph))
    assert (clf.predict(F_np[60:]) == y[60:]).mean() >= 0.9


@pytest.mark.parametrize(("w", "c"), [(100, 1), (60, 3), (5, 2)])
def test_parity_flat_segments(w, c):
    X = flat_segments(120, w, c, seed=w + c)
    features = ConvFeatures(n_features=504, random_state=3).fit(X[:40])
    assert flipped_fraction(features.transform(X), graph_features(features, X)) \
        <= MAX_FLIPPED_FRACTION


def test_nudged_biases_survive_another_summation_order(monkeypatch):
    """Flat segments give outputs exactly equal to paper-style biases; nudged ones do not.

    Float64 stands in for another CPU or onnxruntime build summing in another order.
    """
    X = flat_segments(150, 100, 1, seed=11)
    nudged = ConvFeatures(n_features=1008, random_state=1).fit(X[:50])
    assert flipped_fraction(float64_features(nudged, X), graph_features(nudged, X)) \
        <= MAX_FLIPPED_FRACTION

    def paper_quantiles(outputs, quantiles, tol):
        return np.stack([np.quantile(o, q) for o, q in zip(outputs, quantiles, strict=True)])

    monkeypatch.setattr(conv_module, "nudged_quantiles", paper_quantiles)
    paper = ConvFeatures(n_features=1008, random_state=1).fit(X[:50])
    assert flipped_fraction(float64_features(paper, X), graph_features(paper, X)) > 0.01


def test_large_offset_is_centred(vibration):
    X, y = vibration
    shifted = X + np.float32(1000.0)
    a = ConvFeatures(n_features=336, random_state=4).fit(X)
    b = ConvFeatures(n_features=336, random_state=4).fit(shifted)
    # Kernels sum to zero and channels are centred: the offset changes (almost) nothing.
    assert flipped_fraction(a.transform(X), b.transform(shifted)) < 0.02
    assert flipped_fraction(b.transform(shifted), graph_features(b, shifted)) \
        <= MAX_FLIPPED_FRACTION


def reference_transform(features: ConvFeatures, x: np.ndarray) -> np.ndarray:
    """The recipe written plainly, in float64: pad, convolve each kernel over the channels
    it sums, count the outputs above each bias (over the positions where an unpadded
    kernel fits, on every ``stride``-th position), in ``transform`` order."""
    series = {"conv": x.astype(np.float64), "conv_diff": np.diff(x.astype(np.float64), axis=1)}
    parts = []
    for prefix, bank in features.banks_.items():
        s = series[prefix] - bank.center
        n, w, _ = s.shape
        for i, d in enumerate(bank.dilations):
            half = 4 * int(d)
            xp = np.pad(s, ((0, 0), (half, half), (0, 0)))
            for padded, kernels in bank.groups(i):
                for k in kernels:
                    out = sum(KERNELS[k, j] * xp[:, j * d: j * d + w][:, :, bank.channel_mask[i, k]]
                              .sum(axis=2) for j in range(9))
                    st = bank.stride
                    out = (out[:, ::st] if padded else
                           out[:, -(-half // st) * st: w - half: st])  # the stride's grid
                    for b in bank.biases[i][k]:
                        parts.append((out > b).mean(axis=1))
    return np.stack(parts, axis=1)


@pytest.mark.parametrize("w, c, stride", [(40, 1, 1), (23, 3, 1), (7, 2, 1), (61, 2, 3)])
def test_fast_transform_equals_the_plain_recipe(w, c, stride):
    # Small integers, mean exactly 0 (each window and its negation): every sum is exact in
    # float32 in any order, so the fast transform must match the plain one bit for bit.
    rng = np.random.default_rng(w)
    half = rng.integers(-8, 9, size=(6, w, c)).astype(np.float32)
    x = np.concatenate([half, -half])
    features = ConvFeatures(n_features=336, random_state=3).fit_banks(x, stride)
    assert not features.banks_["conv"].center.any()
    assert (~features.banks_["conv"].padded).any() == (w > 9)  # both groups are exercised
    expected = reference_transform(features, x).astype(np.float32)
    np.testing.assert_array_equal(features.transform(x), expected)


def test_pools_share_outputs_and_equal_their_own_transforms(vibration):
    # Pools fitted on different folds (as the pruning fits them): their difference banks
    # share the convolutions, their window banks do not (different centring); every
    # family's features are still exactly its own transform's.
    x = vibration[0][:30]
    pools = [ConvFeatures(n_features=420, random_state=5).fit(x[rows])
             for rows in (np.arange(0, 20), np.arange(10, 30), np.arange(30))]
    assert pools[0].banks_["conv_diff"].shares_outputs(pools[1].banks_["conv_diff"])
    assert not pools[0].banks_["conv"].shares_outputs(pools[1].banks_["conv"])
    together = conv_module.transform_pools(pools, x)
    for family, features in zip(pools, together, strict=True):
        np.testing.assert_array_equal(features, family.transform(x))
    continuous = x + np.float32(0.37)  # continuous data: the plain recipe within rounding
    assert flipped_fraction(pools[2].transform(continuous),
                            reference_transform(pools[2], continuous)) < MAX_FLIPPED_FRACTION
