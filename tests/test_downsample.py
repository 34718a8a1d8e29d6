"""``downsample=N``: a family on the mean of every N samples (numpy, graph, candidates)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.runtime import open_session
from edge.tools import synthetic
from trainer import sessions
from trainer.export import build_model
from trainer.features.downsample import Downsampled, block_mean, block_mean_onnx
from trainer.features.registry import (
    DEFAULT_CANDIDATES,
    DOWNSAMPLED_LENGTH,
    build_families,
    default_candidates,
    parse_features,
)
from trainer.graph import GraphBuilder, float_input
from trainer.pipeline import Pipeline

LABELS = ("normal", "imbalance", "misalignment")


@pytest.fixture(scope="module")
def data():
    X, y = synthetic.make_windows(n_per_class=10, window=50, channels=2, labels=LABELS, seed=5)
    return X, y


def test_block_mean_averages_whole_blocks_and_drops_the_rest():
    x = np.arange(2 * 7 * 1, dtype=np.float32).reshape(2, 7, 1)
    out = block_mean(x, 3)
    assert out.shape == (2, 2, 1)
    np.testing.assert_array_equal(out[0, :, 0], [1.0, 4.0])  # means of 0,1,2 and 3,4,5
    np.testing.assert_array_equal(out[1, :, 0], [8.0, 11.0])  # 7,8,9 and 10,11,12; 13 dropped


@pytest.mark.parametrize(("w", "factor"), [(50, 5), (50, 7)])
def test_block_mean_graph_matches_numpy(data, w, factor):
    X = data[0][:, :w]
    g = GraphBuilder("downsample_only")
    out = g.rename(block_mean_onnx(g, "window", w, factor, X.shape[2]), "short")
    model = g.model([float_input("window", [None, w, X.shape[2]])],
                    [float_input(out, [None, w // factor, X.shape[2]])])
    got = sessions.session(model).run(None, {"window": X})[0]
    np.testing.assert_allclose(got, block_mean(X, factor), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spec", ["conv:pool=420:keep=24:downsample=2", "stats:downsample=5"])
def test_downsampled_pipeline_exports_the_same_probabilities(data, spec):
    X, y = data
    pipe = Pipeline((spec,), random_state=1, network_params={"max_epochs": 60}).fit(X, y)
    family = pipe.families_[0]
    assert isinstance(family, Downsampled)
    assert family.describe()["window"] == 50
    assert family.describe()["downsampled_window"] == 50 // family.factor
    model = build_model(pipe, channels=["a", "b"], window=50, hop=50, name="d", version="1")
    assert any(n.name == "downsample_mean" for n in model.graph.node)
    P = sessions.run(sessions.session(model), X)
    np.testing.assert_allclose(P, pipe.predict_proba(X), atol=1e-3)
    # The edge's numpy runtime (32-bit Pis) runs the same two nodes.
    numpy_session = open_session(model.SerializeToString(), runtime="numpy")
    np.testing.assert_allclose(numpy_session.run(None, {"window": X})[0], P, atol=1e-5)


def test_a_downsampled_pruned_pool_reports_its_pruning(data):
    X, y = data
    family = build_families(["conv:pool=420:keep=auto:downsample=2"])[0]
    family.fit(X, y)
    assert family.supervised
    assert family.pruning_["pool"] == 420  # the inner pool's record, read through
    assert family.n_features_out_ == family.pruning_["kept"]
    assert family.feature_names(["a", "b"])[0].startswith("mean2:conv_")


def test_long_windows_get_the_downsampled_candidate():
    assert default_candidates(2 * DOWNSAMPLED_LENGTH - 1) == list(DEFAULT_CANDIDATES)
    long = default_candidates(10 * DOWNSAMPLED_LENGTH + 3)
    assert long[:-1] == list(DEFAULT_CANDIDATES)
    assert long[-1] == ("conv:pool=10080:keep=auto:downsample=10",)
    assert isinstance(build_families(long[-1])[0], Downsampled)


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "auto"])
def test_bad_downsample_says_what_to_give(value):
    with pytest.raises(ValueError, match="downsample"):
        parse_features(f"conv:pool=840:downsample={value}")


def test_downsample_of_one_is_the_plain_family():
    assert not isinstance(build_families(["stats:downsample=1"])[0], Downsampled)


def test_windows_too_short_for_the_factor_are_refused(data):
    family = build_families(["stats:downsample=30"])[0]
    with pytest.raises(ValueError, match="at least 60 samples"):
        family.fit(data[0])


def test_the_prior_stays_the_full_length_pool():
    from trainer.fit import _prior
    from trainer.selection import with_budget

    sets = with_budget(default_candidates(1000), 100.0)
    assert sets[-1][0].startswith("conv:pool=10080:keep=auto:downsample=5:budget_us=")
    assert _prior(sets) == ["conv:pool=10080:keep=auto:budget_us=80"]
