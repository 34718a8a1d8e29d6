"""``sigmoid-train fit DATA --add DIR``: labelled captures join the training set, as counted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.contract import decode_metadata
from edge.tools import synthetic
from edge.tools.sensorfiles import CsvWriter
from tests.capture_helpers import store_windows
from trainer.captures import Labels, load_labelled
from trainer.cli import main

LABELS = ("normal", "imbalance")


@pytest.fixture
def captures(tmp_path):
    """A capture dir: 3 labelled (one with a new label), 1 skipped, 1 unlabelled, 1 too short."""
    rng = np.random.default_rng(3)
    X = np.stack([synthetic.signal(lb, 64, rng) for lb in ("normal", "imbalance", "normal",
                                                           "normal", "imbalance")])
    probs = np.full((5, 2), 0.5)
    root = tmp_path / "caps"
    ids = store_windows(root, X, probs, LABELS, synthetic.CHANNELS)
    short = store_windows(root, X[:1, :32], probs[:1], LABELS, synthetic.CHANNELS,
                          device="dev2")
    book = Labels(root)
    for cid, label in zip(ids, ("normal", "imbalance", "loose_bolt", None), strict=False):
        book.set(cid, label)
    book.set(short[0], "normal")  # labelled, but 32 samples: cannot join 64-sample windows
    return root


def test_load_labelled_counts_what_it_leaves_out(captures):
    added = load_labelled([captures], ("z", "y", "x"), 64)  # channels reordered by name
    assert added.X.shape == (3, 64, 3)
    assert sorted(added.y.tolist()) == ["imbalance", "loose_bolt", "normal"]
    s = added.summary
    assert (s["used"], s["skipped"], s["unlabelled"], s["mismatched"]) == (3, 1, 1, 1)
    with pytest.raises(FileNotFoundError, match="sigmoid-train collect"):
        load_labelled([captures / "windows"], ("x", "y", "z"), 64)


@pytest.mark.slow
def test_fit_add_trains_on_the_labelled_captures(tmp_path, captures, capsys):
    data = tmp_path / "train.csv"
    rng = np.random.default_rng(1)
    with CsvWriter(data, synthetic.CHANNELS, device=False, label=True) as w:
        for k, label in enumerate(LABELS):  # 10 windows of 64 samples each
            w.write_many(1000 * k + np.arange(640) / 100, synthetic.signal(label, 640, rng),
                         label=[label] * 640)
    out = tmp_path / "model"
    code = main(["fit", str(data), "--window", "64", "--hop", "64", "--features", "stats",
                 "--hidden", "none", "--latency-budget-us", "0", "--add", str(captures),
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "3 labelled windows added (1 unlabelled, 1 skipped, 1 of another" in \
        capsys.readouterr().out
    train = json.loads((out / "report.json").read_text())["data"]["train"]
    assert train["windows_before_captures"] == 20 and train["windows"] == 23
    assert train["captures"]["used"] == 3 and train["captures"]["skipped"] == 1
    assert train["class_counts"] == {"imbalance": 11, "loose_bolt": 1, "normal": 11}
    import onnx

    meta = {p.key: p.value for p in onnx.load(out / "model.int8.onnx").metadata_props}
    assert decode_metadata(meta).labels == ("imbalance", "loose_bolt", "normal")
