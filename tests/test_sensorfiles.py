"""Loaders for .ts archives and CSV sensor logs: content, and precise errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.tools.sensorfiles import CsvWriter, SensorFileError, read_csv, read_ts, resample_linear

DATA = Path(__file__).parent / "data"

HEADER = "@problemName T\n@univariate true\n@equalLength true\n@classLabel true a b\n@data\n"


def test_univariate_equal_length():
    d = read_ts(DATA / "tiny_univariate.ts")
    assert d.problem_name == "TinyUni"
    assert d.class_labels == ["low", "high"]
    assert d.labels == ["low"] * 3 + ["high"] * 3
    assert [s.shape for s in d.series] == [(6, 1)] * 6
    np.testing.assert_allclose(d.series[3][:, 0], [1.1, 1.2, 1.1, 1.0, 1.1, 1.2])


def test_percent_comments_are_skipped(tmp_path):
    path = tmp_path / "c.ts"
    path.write_text("% a comment\n" + HEADER + "% another\n1,2,3:a\n")
    assert read_ts(path).labels == ["a"]


def test_multivariate_unequal_length_with_missing_values():
    d = read_ts(DATA / "tiny_unequal.ts")
    assert d.n_channels == 2
    assert d.lengths.tolist() == [4, 8, 4, 3]
    assert d.labels == ["walk", "run", "walk", "run"]
    assert np.isnan(d.series[1][1, 0]) and np.isnan(d.series[2][0, 1])
    np.testing.assert_array_equal(d.series[0][:, 1], [10, 11, 12, 13])


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("1,2,3:c\n", 6, "class label 'c' is not one of those declared"),
        ("1,2,3:a\n1,x,3:b\n", 7, "value 2: expected a number or '?', got 'x'"),
        ("1,2,3:a\n1,2:3,4:b\n", 7, "expected 1 channel"),
        ("1,2,3\n", 6, "followed by ':<class label>'"),
        ("1,2,3:a\n1,2:b\n", None, "different lengths"),
    ],
)
def test_bad_ts_cases_name_file_line_and_fix(tmp_path, body, line, message):
    path = tmp_path / "bad.ts"
    path.write_text(HEADER + body)
    with pytest.raises(SensorFileError) as err:
        read_ts(path)
    assert str(path) in str(err.value)
    assert err.value.line == line
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("1,2,3:a\n", 1, "header line starting with '@'"),
        ("@problemName x\n", None, "no '@data' line"),
        ("@classLabel maybe\n@data\n1:a\n", 1, "must be 'true' or 'false'"),
        ("@classLabel true\n@data\n1:a\n", 1, "followed by the class labels"),
        ("@timeStamps true\n@data\n", 1, "not supported"),
        ("@dimensions two\n@data\n", 1, "@dimensions must be an integer"),
        ("@classLabel true a\n@data\n", None, "no cases"),
    ],
)
def test_bad_ts_headers(tmp_path, text, line, message):
    path = tmp_path / "bad.ts"
    path.write_text(text)
    with pytest.raises(SensorFileError) as err:
        read_ts(path)
    assert err.value.line == line and message in str(err.value)


def test_resample_linear_keeps_ends_and_interpolates():
    x = np.array([[0.0], [2.0], [4.0]])
    np.testing.assert_allclose(resample_linear(x, 5)[:, 0], [0, 1, 2, 3, 4])
    np.testing.assert_allclose(resample_linear(x, 2)[:, 0], [0, 4])
    assert resample_linear(np.array([[7.0]]), 3)[:, 0].tolist() == [7, 7, 7]


def test_csv_log_reader():
    log = read_csv(DATA / "tiny_log.csv")
    assert log.channels == ("ax", "ay")
    assert log.values.shape == (10, 2) and log.values.dtype == np.float32
    assert np.isnan(log.values[2, 0]) and np.isnan(log.values[6, 1])
    assert log.device.tolist()[:4] == ["dev1", "dev1", "dev1", "dev2"]
    assert log.label[0] == "idle"
    only_ay = read_csv(DATA / "tiny_log.csv", channels=["ay"]).values
    np.testing.assert_allclose(only_ay[:2, 0], [1.0, 1.1], rtol=1e-6)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", 1, "empty file"),
        ("time,x\n1,2\n", 1, "expected a 'ts' column"),
        ("ts,x,x\n1,2,3\n", 1, "duplicate column names ['x']"),
        ("ts,x\n1,2\n2,3,4\n", 3, "expected 2 comma-separated values"),
        ("ts,x\n1,2\nnoon,3\n", 3, "column 'ts': expected a number in seconds, got 'noon'"),
        ("ts,x\n1,2\n2,fast\n", 3, "column 'x': expected a number, or empty/'?' if missing"),
        ("ts,x\n", None, "no data rows"),
        ("ts,label\n1,a\n", 1, "no channel columns"),
    ],
)
def test_bad_csv_logs(tmp_path, text, line, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(SensorFileError) as err:
        read_csv(path)
    assert str(path) in str(err.value)
    assert err.value.line == line
    assert message in str(err.value)


def test_csv_missing_requested_channel(tmp_path):
    with pytest.raises(SensorFileError, match=r"channel column\(s\) \['gz'\] not found"):
        read_csv(DATA / "tiny_log.csv", channels=["ax", "gz"])


def test_writer_round_trip_append_and_resume(tmp_path):
    path = tmp_path / "rec.csv"
    with CsvWriter(path, ["x", "y"], device=True, label=True) as w:
        w.write(1.5, [0.25, float("nan")], device="d1", label="idle")
        w.flush()
        w.write_many([1.6, 1.7], [[1, 2], [3, 4]], device=["d1", "d2"])
        assert w.rows == 3
    with CsvWriter(path, ["x", "y"], device=True, label=True) as w:  # resume: same header
        w.write(1.8, [5, 6], device="d2", label="run")
    log = read_csv(path)
    assert path.read_text().splitlines()[0] == "ts,device,label,x,y"
    np.testing.assert_allclose(log.ts, [1.5, 1.6, 1.7, 1.8])
    assert np.isnan(log.values[0, 1]) and log.values[3].tolist() == [5, 6]
    assert log.device.tolist() == ["d1", "d1", "d2", "d2"]
    assert log.label.tolist() == ["idle", "", "", "run"]
    with pytest.raises(SensorFileError, match="cannot append"):
        CsvWriter(path, ["x", "z"], device=True, label=True)
    with pytest.raises(ValueError, match="expected 2 values per row"):
        CsvWriter(tmp_path / "other.csv", ["x", "y"]).write(1.0, [1, 2, 3])
    with pytest.raises(ValueError, match="channel names"):
        CsvWriter(tmp_path / "other2.csv", ["ts", "y"])


def test_writer_keeps_unix_time_precision(tmp_path):
    path = tmp_path / "rec.csv"
    with CsvWriter(path, ["x"], device=False) as w:
        w.write_many([1700000000.123456, 1700000000.223456], [[1], [2]])
    assert np.diff(read_csv(path).ts)[0] == pytest.approx(0.1, abs=1e-6)
