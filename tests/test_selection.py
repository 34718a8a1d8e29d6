"""Choosing defaults by cross-validation on the training windows only."""

from __future__ import annotations

import numpy as np
import pytest

from edge.tools import synthetic
from tests import standin
from trainer import selection
from trainer.data import Dataset
from trainer.fit import FitOptions, fit


def test_folds_are_stratified_and_cover_every_window():
    y = np.array(["a"] * 10 + ["b"] * 5)
    splits = selection.folds(y, seed=0)
    assert len(splits) == 5
    seen = np.concatenate([va for _, va in splits])
    assert sorted(seen.tolist()) == list(range(15))
    for tr, va in splits:
        assert set(tr) & set(va) == set()
        assert (y[va] == "a").sum() == 2 and (y[va] == "b").sum() == 1


def test_big_data_uses_one_holdout(monkeypatch):
    monkeypatch.setattr(selection, "HOLDOUT_ABOVE", 20)
    y = np.repeat(["a", "b"], 20)
    (tr, va), = selection.folds(y, seed=1)
    assert len(va) == 8 and len(tr) == 32


def test_select_prefers_the_features_that_separate_the_classes():
    X, y = synthetic.make_windows(n_per_class=10, window=64, seed=4)
    # The mean of each channel over the window carries almost no class information here.
    best, table = selection.select(X, y, [("raw:points=1",), ("stats", "spectral")],
                                   [{"hidden_layers": ()}], network_factory=standin.factory)
    assert best["features"] == ["stats", "spectral"]
    assert len(table) == 2 and table[1]["validation_accuracy"] > table[0]["validation_accuracy"]


def test_the_prior_wins_unless_another_candidate_is_significantly_better():
    X, y = synthetic.make_windows(n_per_class=10, window=64, seed=4)
    sets = [("stats", "spectral"), ("raw:points=1",)]
    # the uninformative feature set as the prior: the informative one beats it clearly
    best, table = selection.select(X, y, sets, [{"hidden_layers": ()}],
                                   network_factory=standin.factory, prior=sets[1])
    assert best["features"] == ["stats", "spectral"]
    assert best["chosen_by"] == "validation accuracy" and best["prior_z"] > selection.PRIOR_Z
    # the same feature set twice: no difference, the prior (listed second) wins the tie
    best, table = selection.select(X, y, [sets[0], ("spectral", "stats")],
                                   [{"hidden_layers": ()}], network_factory=standin.factory,
                                   prior=("spectral", "stats"))
    assert best["features"] == ["spectral", "stats"] and best["chosen_by"].startswith("prior")
    assert best["prior_z"] == 0


def test_paired_z_counts_standard_errors_of_the_paired_difference():
    a = np.array([1, 1, 1, 0, 1, 0, 1, 1, np.nan, 1.0])
    b = np.array([1, 0, 1, 0, 0, 1, 1, 0, 0, 1.0])
    d = (a - b)[:8].tolist() + [0.0]  # the unvalidated window is left out
    want = np.mean(d) / (np.std(d, ddof=1) / np.sqrt(len(d)))
    assert selection.paired_z(a, b) == pytest.approx(want)
    assert selection.paired_z(b, a) == pytest.approx(-want)
    assert selection.paired_z(a, a) == 0.0
    assert selection.paired_z(np.array([1.0, 1, 0]), np.array([0.0, 1, 0])) == pytest.approx(1.0)


def test_fit_falls_back_to_the_first_candidate_with_one_window_in_a_class():
    X, y = synthetic.make_windows(n_per_class=6, window=32, seed=5)
    keep = np.ones(len(y), bool)
    keep[np.flatnonzero(y == "normal")[1:]] = False  # one "normal" window left
    data = Dataset(X[keep], y[keep], ("x", "y", "z"), 32, 32, None, "mem", {"cases": 19})
    result = fit(data, None, FitOptions(network_factory=standin.factory,
                                        quantization_variants=["static_qop_tensor_net"]))
    sel = result.report["parameters"]["selection"]
    assert sel["method"].startswith("none: the smallest class has 1 training window")
    from trainer.features.registry import DEFAULT_CANDIDATES

    assert result.report["parameters"]["features"] == list(DEFAULT_CANDIDATES[0])


def test_too_few_windows_is_a_value_error():
    with pytest.raises(ValueError, match="smallest class has 1"):
        selection.folds(np.array(["a", "a", "b"]), seed=0)


def _two_feature_sets():
    X, y = synthetic.make_windows(n_per_class=10, window=64, seed=4)
    # stats+spectral separate the classes; one point per channel does not.
    return X, y, [("raw:points=1",), ("stats", "spectral")]


def test_latency_budget_rules_out_the_more_accurate_but_slow_features():
    X, y, sets = _two_feature_sets()
    cost = {("raw:points=1",): 10.0, ("stats", "spectral"): 500.0}
    best, table = selection.select(X, y, sets, [{"hidden_layers": ()}],
                                   network_factory=standin.factory,
                                   latency_of=lambda f, fams: cost[tuple(f)], latency_budget_us=100)
    assert best["features"] == ["raw:points=1"]
    assert [r["batch1_latency_us"] for r in table] == [10.0, 500.0]
    # Without a budget the same table gives the accurate one.
    best, _ = selection.select(X, y, sets, [{"hidden_layers": ()}],
                               network_factory=standin.factory,
                               latency_of=lambda f, fams: cost[tuple(f)], latency_budget_us=0)
    assert best["features"] == ["stats", "spectral"]


def test_when_nothing_fits_the_budget_accuracy_decides_with_a_warning(caplog):
    X, y, sets = _two_feature_sets()
    best, _ = selection.select(X, y, sets, [{"hidden_layers": ()}],
                               network_factory=standin.factory,
                               latency_of=lambda f, fams: 1000.0, latency_budget_us=100)
    assert best["features"] == ["stats", "spectral"]
    assert "no candidate fits the latency budget of 100 us" in caplog.text


@pytest.mark.slow
def test_fit_times_each_feature_set_and_records_the_budget():
    X, y = synthetic.make_windows(n_per_class=8, window=32, seed=6)
    data = Dataset(X, y, ("x", "y", "z"), 32, 32, None, "mem", {"cases": len(y)})
    result = fit(data, None, FitOptions(network_factory=standin.factory, hidden_layers=(),
                                        quantization_variants=["static_qop_tensor_net"],
                                        latency_budget_us=1e6))
    sel = result.report["parameters"]["selection"]
    assert sel["latency_budget_us"] == 1e6
    # Measured, not made up: positive, and the bigger feature sets cost more than raw:1.
    latencies = {tuple(r["features"]): r["batch1_latency_us"] for r in sel["candidates"]}
    assert all(v > 0 for v in latencies.values())
    conv = next(v for k, v in latencies.items() if k[0].startswith("conv"))
    assert conv > latencies[("raw", "stats")]


def test_cli_budget_default_matches_the_selection_default():
    from trainer import cli

    assert cli.LATENCY_BUDGET_US == selection.DEFAULT_LATENCY_BUDGET_US


def test_reference_latency_is_counted_against_the_reference_graph(tmp_path):
    """The budget's unit: the reference graph itself measures about REFERENCE_US whatever
    the machine's speed or load, and a graph doing far less work measures far less."""
    from tests.models import mean_model
    from trainer import sessions

    ref, window = sessions.reference()
    assert 0.6 < sessions.reference_latency_us(ref, window) / sessions.REFERENCE_US < 1.6
    tiny = sessions.session(mean_model(tmp_path / "mean.onnx", window=100,
                                       channels=tuple(f"c{i}" for i in range(6))))
    assert sessions.reference_latency_us(tiny, window) < 0.5 * sessions.REFERENCE_US
