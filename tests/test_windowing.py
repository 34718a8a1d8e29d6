"""Windows from .ts cases (resampling, missing values) and from continuous CSV recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer.data import load_dataset
from trainer.data.windowing import fill_missing, majority, recording_windows, segments

DATA = Path(__file__).parent / "data"


def test_fill_missing_interpolates_inside_and_repeats_at_ends():
    x = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, np.nan], [8.0, np.nan]])
    out = fill_missing(x)
    np.testing.assert_allclose(out[:, 0], [2, 2, 5, 8])
    np.testing.assert_allclose(out[:, 1], [1, 1, 1, 1])
    assert fill_missing(np.full((3, 1), np.nan)).tolist() == [[0.0]] * 3


def test_ts_unequal_lengths_are_resampled_to_the_longest_case():
    d = load_dataset(DATA / "tiny_unequal.ts")
    assert d.X.shape == (4, 8, 2) and d.window == 8 and d.hop == 8
    # Case 0 (0,1,2,3) stretched linearly to 8 samples keeps both ends.
    np.testing.assert_allclose(d.X[0, :, 0], np.linspace(0, 3, 8), atol=1e-6)
    assert np.isfinite(d.X).all()
    # Case 1's missing second value is interpolated before resampling (same length: as is).
    np.testing.assert_allclose(d.X[1, :, 0], np.arange(8), atol=1e-6)
    assert d.summary["resampled_cases"] == 3
    assert d.summary["missing_values_filled"] == 4
    assert d.channels == ("dim_0", "dim_1")
    assert load_dataset(DATA / "tiny_unequal.ts", window=5).X.shape == (4, 5, 2)


def test_segments_split_at_gaps_and_clock_jumps():
    ts = np.array([0.0, 0.1, 0.2, 0.3, 1.0, 1.1, 1.05, 1.15])
    assert [(s.start, s.stop) for s in segments(ts)] == [(0, 4), (4, 6), (6, 8)]


def test_majority_label_ties_go_to_the_smaller_code():
    codes = np.array([[0, 1, 1], [1, 0, -1], [-1, -1, -1]])
    assert majority(codes, 2).tolist() == [1, 0, -1]


def test_recording_windows_per_device_and_segment():
    ts = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3], float)
    values = np.arange(18, dtype=np.float32).reshape(9, 2)
    device = np.array(["a"] * 5 + ["b"] * 4)
    label = np.array(["x", "x", "y", "y", "y", "z", "", "", ""])
    X, y, info = recording_windows(ts, values, window=3, hop=1, device=device, label=label)
    assert X.shape == (5, 3, 2)
    np.testing.assert_array_equal(X[0], values[0:3])
    np.testing.assert_array_equal(X[3], values[5:8])  # device b starts its own windows
    # Majority among the labelled samples; "" only when none of them is labelled.
    assert y.tolist() == ["x", "y", "y", "z", ""]
    assert info.pop("window_devices").tolist() == ["a", "a", "a", "b", "b"]
    assert info == {"segments": 2, "devices": 2, "sample_rate_hz": 1.0}


def test_csv_dataset_windows_labels_and_missing_values():
    d = load_dataset(DATA / "tiny_log.csv", window=3, hop=1)
    assert d.channels == ("ax", "ay")
    assert d.y.tolist() == ["idle", "idle", "move", "move"]
    np.testing.assert_allclose(d.X[0, :, 0], [0.0, 0.1, 0.2], atol=1e-6)  # filled 0.2
    np.testing.assert_allclose(d.X[2, :, 1], [1.2, 1.3, 1.3], atol=1e-6)  # edge repeat
    assert d.sample_rate_hz == pytest.approx(10.0)
    assert d.summary["segments"] == 3


def test_csv_dataset_needs_a_window():
    with pytest.raises(ValueError, match="needs --window N"):
        load_dataset(DATA / "tiny_log.csv")


def test_unknown_suffix_is_named(tmp_path):
    path = tmp_path / "data.parquet"
    path.write_text("x")
    with pytest.raises(ValueError, match="expected a UEA/UCR '.ts' file or a '.csv' log"):
        load_dataset(path)
