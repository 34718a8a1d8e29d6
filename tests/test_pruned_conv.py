"""Pruned convolutional features (conv:pool=...:keep=...): detachment, export, selection."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edge.tools import synthetic
from trainer import quantize, sessions
from trainer.data import Dataset
from trainer.export import build_model
from trainer.features import pruned_conv, pruning
from trainer.features.conv import ConvFeatures
from trainer.features.registry import DEFAULT_CANDIDATES, build_families, parse_features
from trainer.fit import FitOptions, fit
from trainer.pipeline import Pipeline
from trainer.selection import with_budget

from . import standin
from .test_features_conv import MAX_FLIPPED_FRACTION, flipped_fraction, graph_features

LABELS = ("normal", "imbalance", "misalignment", "bearing_fault")


@pytest.fixture(scope="module")
def data():
    Xtr, ytr = synthetic.make_windows(n_per_class=12, window=48, channels=3, labels=LABELS,
                                      seed=31)
    Xte, yte = synthetic.make_windows(n_per_class=10, window=48, channels=3, labels=LABELS,
                                      seed=32)
    return Xtr, ytr, Xte, yte


@pytest.fixture(scope="module")
def pruned(data):
    Xtr, ytr, _, _ = data
    return ConvFeatures(pool=840, keep="auto", random_state=3).fit(Xtr, ytr)


# ---------------------------------------------------------------- detachment (pure numpy)


def test_schedule_is_strictly_decreasing_to_the_minimum():
    sizes = pruning.schedule(10080)
    assert sizes[0] == 10080 and sizes[-1] == pruning.MIN_KEEP
    assert (np.diff(sizes) < 0).all()
    assert sizes[1] == 9072  # 10% of the remaining detached per step
    assert pruning.schedule(100, min_keep=30)[-1] == 30


def test_detachment_keeps_the_informative_features():
    rng = np.random.default_rng(0)
    n, p = 120, 300
    codes = rng.integers(0, 3, n)
    F = rng.normal(size=(n, p))
    informative = np.array([7, 42, 99, 150, 299])
    F[:, informative] += 2.0 * (codes[:, None] == np.arange(5)[None, :] % 3)
    sizes = pruning.schedule(p, min_keep=5)
    removed, acc, _ = pruning.detach(F[:80], codes[:80], 3, sizes, F[80:], codes[80:])
    assert set(np.flatnonzero(removed == len(sizes))) == set(informative)
    assert acc[-1] >= 0.9 and acc[-1] > acc[0]  # the noise hurt the full pool
    # The smallest set within the tolerance of the best.
    assert pruning.choose_step(np.array([0.8, 0.9, 0.9, 0.897, 0.85]), 0.005) == 3
    assert pruning.choose_step(np.array([0.8, 0.9, 0.9, 0.897, 0.85]), 0.005, 4) == 4
    # Not below the floor size while the budget allows it, the budget's size when not.
    sizes = np.array([100, 50, 25, 12, 6])
    assert pruning.choose_step(np.array([0.8, 0.9, 0.9, 0.9, 0.9]), 0.005, 0, sizes, 20) == 2
    assert pruning.choose_step(np.array([0.8, 0.9, 0.9, 0.9, 0.9]), 0.005, 3, sizes, 20) == 3
    np.testing.assert_allclose(pruning.smooth([0.0, 3.0, 0.0, 3.0]), [1.5, 1.0, 2.0, 1.5])


def test_the_curve_has_no_interpolation_dip_where_features_match_windows(monkeypatch):
    # 100 training windows, 600 weakly informative features: more features are better. At 99
    # features (the centred windows' rank) the minimum-norm ridge interpolates, and its
    # validation accuracy collapses below that of half the features; the scoring ridge's
    # curve keeps falling as features go.
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2, 400)
    F = rng.normal(size=(400, 600)) + 0.15 * (2 * codes[:, None] - 1)
    sizes = np.array([600, 300, 150, 99, 50])

    def curve():
        return pruning.detach(F[:100], codes[:100], 2, sizes, F[100:], codes[100:])[1]

    scored = curve()
    assert (np.diff(scored) <= 0).all() and scored[3] > scored[4] + 0.05
    monkeypatch.setattr(pruning, "SCORING_ALPHA", pruning.RANKING_ALPHA)
    interpolating = curve()
    assert interpolating[3] < interpolating[4] - 0.1
    np.testing.assert_array_equal(interpolating[[0, 1, 2, 4]], scored[[0, 1, 2, 4]])


# ---------------------------------------------------------------- the family


def test_pruned_family_records_the_curve_and_keeps_few(pruned, data):
    p = pruned.pruning_
    assert p["pool"] == 840 and p["kept"] == pruned.n_features_out_ < 840
    steps = p["steps"]
    assert [s["n_features"] for s in steps] == list(pruning.schedule(840))
    floor = 840 * pruning.MIN_AUTO_SHARE  # sizes below it are not chosen
    best = max(s["smoothed_accuracy"] for s in steps if s["n_features"] >= floor)
    chosen = steps[p["chosen_step"]]
    assert chosen["n_features"] == p["kept"] >= floor
    assert chosen["smoothed_accuracy"] >= best - p["tolerance"] - 1e-9
    # Every smaller size (above the floor) was worse than the tolerance allows.
    assert all(s["smoothed_accuracy"] < best - p["tolerance"]
               for s in steps[p["chosen_step"] + 1:] if s["n_features"] >= floor)
    assert len(pruned.feature_names(["x", "y", "z"])) == p["kept"]
    # Per fold: features chosen without the validation windows, at the kept size.
    assert len(pruned.fold_features_) == p["folds"] == 5
    for F_tr, F_va in pruned.fold_features_:
        assert F_tr.shape[1] == F_va.shape[1] == p["kept"]
        assert F_tr.shape[0] + F_va.shape[0] == len(data[1])


def test_pruned_graph_matches_numpy_and_costs_what_is_kept(pruned, data):
    _, _, Xte, _ = data
    ours = pruned.transform(Xte)
    assert ours.shape == (len(Xte), pruned.n_features_out_)
    assert flipped_fraction(ours, graph_features(pruned, Xte)) <= MAX_FLIPPED_FRACTION
    # The pruned features are the pool's columns.
    pool = ConvFeatures(n_features=840, random_state=3)
    pool.banks_, pool.window_, pool.channels_ = pruned.banks_, 48, 3
    assert flipped_fraction(pool.transform(Xte)[:, pruned.kept_], ours) <= MAX_FLIPPED_FRACTION
    # One Conv per dilation in use, over the kernels in use only.
    g_nodes = _graph(pruned).graph
    convs = [n for n in g_nodes.node if n.op_type == "Conv"]
    weights = {t.name: t for t in g_nodes.initializer}
    rows = sum(weights[n.input[1]].dims[0] for n in convs)
    plan = pruned.pruned_.plan
    assert len(convs) == len(plan) == len({d for d, _ in plan})  # both series share them
    assert rows == sum(len(w) for _, w in plan) <= pruned.n_features_out_
    per_bank = pruned.describe()["pruning"]["kept_per_bank"]
    assert sum(per_bank.values()) == pruned.n_features_out_
    assert all(n.name.startswith("conv_") for n in g_nodes.node if n.op_type != "Identity")


def test_long_window_counts_every_sth_position_in_numpy_and_graph():
    """positions=64 on 300 samples: PPV on every 4th position, the same in the pool, the
    pruned numpy twin and the graph (one strided Conv per dilation)."""
    Xtr, ytr = synthetic.make_windows(n_per_class=6, window=300, channels=2,
                                      labels=LABELS[:2], seed=5)
    Xte, _ = synthetic.make_windows(n_per_class=4, window=300, channels=2,
                                    labels=LABELS[:2], seed=6)
    few = ConvFeatures(pool=840, keep=40, positions=64, random_state=2).fit(Xtr, ytr)
    assert few.describe()["stride"] == 4 and few.pruned_.stride == 4
    ours = few.transform(Xte)
    assert flipped_fraction(ours, graph_features(few, Xte)) <= MAX_FLIPPED_FRACTION
    pool = ConvFeatures(n_features=840, random_state=2).fit_banks(Xtr, stride=4)
    assert flipped_fraction(pool.transform(Xte)[:, few.kept_], ours) <= MAX_FLIPPED_FRACTION
    # A proportion over 75 positions: a multiple of 1/count for the count of its positions.
    counts = few.pruned_.mask.sum(axis=1)
    assert counts.max() == 75 and np.allclose(np.round(ours * counts) / counts, ours, atol=1e-6)
    convs = [n for n in _graph(few).graph.node if n.op_type == "Conv"]
    assert convs and all(
        [a.ints for a in n.attribute if a.name == "strides"] == [[4]] for n in convs)
    every = ConvFeatures(pool=840, keep=40, positions=0, random_state=2).fit(Xtr, ytr)
    assert every.describe()["stride"] == 1


def test_keep_n_and_channel_subsets(data):
    Xtr, ytr, Xte, _ = data
    few = ConvFeatures(pool=420, keep=12, random_state=1).fit(Xtr, ytr)
    assert few.n_features_out_ == 12 and few.pruning_["folds"] == 0
    assert flipped_fraction(few.transform(Xte), graph_features(few, Xte)) <= MAX_FLIPPED_FRACTION
    described = few.describe()["pruning"]
    assert described["kept"] == 12 and described["pool"] == 420


def test_budget_stops_pruning_at_a_size_that_fits(data, monkeypatch):
    Xtr, ytr, _, _ = data
    # A cost model instead of a clock (pure logic): 1 us per kept feature.
    monkeypatch.setattr(pruned_conv, "features_latency_us",
                        lambda family, window, n_classes: float(family.n_features_out_))
    fam = ConvFeatures(pool=840, keep="auto", budget_us=50, tolerance=0.99,
                       random_state=3).fit(Xtr, ytr)
    p = fam.pruning_
    assert p["largest_within_budget"] <= 50 < pruning.schedule(840)[
        list(pruning.schedule(840)).index(p["largest_within_budget"]) - 1]
    assert fam.n_features_out_ <= 50 and p["batch1_latency_us"] <= 50
    assert any("batch1_latency_us" in s for s in p["steps"])


def test_a_binding_budget_is_spent_on_shared_conv_nodes(data, monkeypatch):
    Xtr, ytr, _, _ = data
    # A cost model instead of a clock (pure logic): 6 us per Conv node, 0.5 us per feature.
    monkeypatch.setattr(pruned_conv, "features_latency_us", lambda family, window, n_classes:
                        6.0 * len(family.pruned_.plan) + 0.5 * family.n_features_out_)
    fitted = {}
    for binds in (False, True):
        monkeypatch.setattr(pruned_conv, "_budget_binds", lambda ranking, tol, b=binds: b)
        fitted[binds] = ConvFeatures(pool=840, keep="auto", budget_us=60, tolerance=0.99,
                                     random_state=3).fit(Xtr, ytr)
    plain, frugal = fitted[False].pruning_, fitted[True].pruning_
    assert not plain["budget_binds"] and plain["dilation_cost"] == 0
    assert "importance_order" not in plain
    assert frugal["budget_binds"] and frugal["dilation_cost"] == pruning.DILATION_COST
    # Binding: each order keeps as many as the budget holds (a larger set validates better).
    assert frugal["kept"] == frugal["largest_within_budget"]
    assert frugal["importance_order"]["kept"] == plain["largest_within_budget"]
    assert frugal["cost_aware_order"]["kept"] == frugal["kept"]
    assert "cost_aware_order" not in plain
    assert plain["kept"] < plain["largest_within_budget"]  # not binding: the smallest
    # Features per Conv node: more in the cost-aware order, and more features in the budget.
    nodes = {b: len(f.pruned_.plan) for b, f in fitted.items()}
    assert frugal["kept"] / nodes[True] > 2 * plain["kept"] / nodes[False]
    assert frugal["largest_within_budget"] > plain["largest_within_budget"]
    assert frugal["batch1_latency_us"] <= 60 and plain["batch1_latency_us"] <= 60


def test_cost_aware_detachment_empties_small_groups_first():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 2, 200)
    F = rng.normal(size=(200, 120)) + 0.3 * (2 * codes[:, None] - 1)  # all alike informative
    groups = np.repeat(np.arange(12), 10)  # 12 Conv nodes of 10 features
    sizes = pruning.schedule(120, min_keep=20)
    plain, _, _ = pruning.detach(F, codes, 2, sizes, groups=groups)
    frugal, _, _ = pruning.detach(F, codes, 2, sizes, groups=groups, group_cost=14.0)
    kept_groups = [len(np.unique(groups[r == len(sizes)])) for r in (plain, frugal)]
    assert 2 * kept_groups[1] <= kept_groups[0], kept_groups
    assert (plain == len(sizes)).sum() == (frugal == len(sizes)).sum() == 20


def test_budget_binds_when_a_larger_set_validates_better():
    r = {"smoothed": np.array([0.80, 0.82, 0.70, 0.71, 0.60]), "first_allowed": 2}
    assert pruned_conv._budget_binds(r, 0.005)
    assert not pruned_conv._budget_binds({**r, "first_allowed": 0}, 0.005)
    assert not pruned_conv._budget_binds(r, 0.2)


def test_selection_keeps_the_pruning_timing_when_a_retiming_is_slower(data, monkeypatch):
    """The selection re-times each candidate; for a pruned pool alone the lower of its own
    timing and the pruning's (the same graph) counts, so load noise cannot undo the size
    the pruning fitted to the budget. A pool beside other families is timed as a whole, and
    so is a downsampled pool: its pruning did not time the Conv in front."""
    from trainer.selection import select

    Xtr, ytr, _, _ = data
    monkeypatch.setattr(pruned_conv, "features_latency_us",
                        lambda family, window, n_classes: float(family.n_features_out_))
    spec = "conv:pool=840:keep=auto:budget_us=40"
    shorter = f"{spec}:downsample=2"
    best, table = select(Xtr, ytr, [[spec], [spec, "stats"], [shorter]],
                         [{"hidden_layers": (), "max_epochs": 20}],
                         latency_of=lambda features, families: 120.0, latency_budget_us=100)
    alone, beside, downsampled = table
    assert alone["batch1_latency_us"] == alone["pruning"][0]["kept"] <= 40
    assert beside["batch1_latency_us"] == downsampled["batch1_latency_us"] == 120.0
    assert downsampled["pruning"][0]["kept"] <= 40
    assert best["features"] == [spec]  # the only candidate within the budget


def test_clear_errors(data):
    Xtr, ytr, _, _ = data
    with pytest.raises(ValueError, match="needs|labels"):
        ConvFeatures(pool=168).fit(Xtr)
    with pytest.raises(ValueError, match="not both"):
        build_families(["conv:pool=840:n_features=168"])[0].fit(Xtr, ytr)
    with pytest.raises(ValueError, match="keep must be"):
        ConvFeatures(pool=168, keep="most").fit(Xtr, ytr)
    with pytest.raises(ValueError, match="more than the pool"):
        ConvFeatures(pool=168, keep=500).fit(Xtr, ytr)


def test_spec_and_budget_reach_the_family():
    (fam,) = build_families(parse_features("conv:pool=10080:keep=auto"))
    assert fam.pool == 10080 and fam.keep == "auto" and fam.supervised
    assert any(s.startswith("conv:pool=") for c in DEFAULT_CANDIDATES for s in c)
    sets = with_budget([["stats"], ["conv:pool=840:keep=auto"], ["conv:pool=84:budget_us=7"]],
                       100)
    assert sets == [["stats"], ["conv:pool=840:keep=auto:budget_us=80"],
                    ["conv:pool=84:budget_us=7"]]
    assert with_budget([["conv:pool=840"]], 0) == [["conv:pool=840"]]


# ---------------------------------------------------------------- in the model


def test_pipeline_with_hidden_layer_exports_and_int8_is_batch_independent(data):
    Xtr, ytr, Xte, _ = data
    pipe = Pipeline(("conv:pool=420:keep=24",), hidden_layers=(8,), random_state=2,
                    network_params={"max_epochs": 60}).fit(Xtr, ytr)
    common = dict(channels=["x", "y", "z"], window=48, hop=48, name="p", version="1")
    model = build_model(pipe, **common)
    P = sessions.run(sessions.session(model), Xte)
    np.testing.assert_allclose(P, pipe.predict_proba(Xte), atol=1e-3)
    int8, _ = quantize.choose(build_model(pipe, fold_scaling=False, **common), Xtr, Xtr, ytr,
                              [str(c) for c in pipe.classes_], candidates=["static_qop_tensor_net"],
                              reference_model=model)
    sess = sessions.session(int8)
    batch = sessions.run(sess, Xte)
    alone = np.concatenate([sessions.run(sess, Xte[i:i + 1]) for i in range(len(Xte))])
    np.testing.assert_array_equal(batch, alone)


@pytest.mark.slow
def test_fit_reports_the_pruning(data):
    Xtr, ytr, Xte, yte = data
    train = Dataset(Xtr, ytr, ("x", "y", "z"), 48, 48, None, "mem", {"cases": len(ytr)})
    test = Dataset(Xte, yte, ("x", "y", "z"), 48, 48, None, "mem", {"cases": len(yte)})
    result = fit(train, test, FitOptions(features=["conv:pool=252:keep=auto"],
                                         network_factory=standin.factory,
                                         quantization_variants=["static_qop_tensor_net"],
                                         latency_budget_us=0))
    report = result.report
    (p,) = report["pruning"]
    assert p["pool"] == 252 and p["kept"] == report["parameters"]["n_features"]
    assert all("validation_accuracy" in s for s in p["steps"])
    assert p["budget_us"] is None and p["batch1_latency_us"] > 0  # no budget: not pruned for it
    # The selection between the two networks validated on per-fold features.
    cands = report["parameters"]["selection"]["candidates"]
    assert cands[0]["pruning"][0]["kept"] == p["kept"]
    assert report["metrics"]["int8"]["test"]["accuracy"] >= 0.9
    assert result.png[:4] == b"\x89PNG"
    meta = {m.key: m.value for m in result.int8_model.metadata_props}
    assert '"pool": 252' in meta["features"]


def _graph(family):
    from trainer.graph import GraphBuilder, float_input

    g = GraphBuilder("t")
    out = g.rename(family.to_onnx(g, "window"), "features")
    return g.model([float_input("window", ["b", family.window_, family.channels_])],
                   [float_input(out, ["b", family.n_features_out_])])


def test_graph_is_valid_onnx(pruned):
    onnx.checker.check_model(_graph(pruned), full_check=True)
