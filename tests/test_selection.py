"""Choosing defaults by cross-validation on the training windows only."""

from __future__ import annotations

import numpy as np
import pytest

from edge import synthetic
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


def test_fit_falls_back_to_the_first_candidate_with_one_window_in_a_class():
    X, y = synthetic.make_windows(n_per_class=6, window=32, seed=5)
    keep = np.ones(len(y), bool)
    keep[np.flatnonzero(y == "normal")[1:]] = False  # one "normal" window left
    data = Dataset(X[keep], y[keep], ("x", "y", "z"), 32, 32, None, "mem", {"cases": 19})
    result = fit(data, None, FitOptions(network_factory=standin.factory,
                                        quantization_variants=["static_qop_tensor_net"]))
    sel = result["report"]["parameters"]["selection"]
    assert sel["method"].startswith("none: the smallest class has 1 training window")
    from trainer.features.registry import DEFAULT_CANDIDATES

    assert result["report"]["parameters"]["features"] == list(DEFAULT_CANDIDATES[0])


def test_too_few_windows_is_a_value_error():
    with pytest.raises(ValueError, match="smallest class has 1"):
        selection.folds(np.array(["a", "a", "b"]), seed=0)
