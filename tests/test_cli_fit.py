"""`sigmoid-train fit / evaluate / inspect` end to end on synthetic .ts and CSV files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edge.contract import decode_metadata
from edge.tools import synthetic
from edge.tools.sensorfiles import CsvWriter
from trainer.fit import OUTPUT_FILES


def write_ts(path, X, y, name="Vib"):
    labels = sorted(set(y.tolist()))
    lines = [f"@problemName {name}", "@univariate false", f"@dimensions {X.shape[2]}",
             "@equalLength true", f"@seriesLength {X.shape[1]}",
             f"@classLabel true {' '.join(labels)}", "@data"]
    for x, label in zip(X, y, strict=True):
        chans = [",".join(f"{v:.6g}" for v in x[:, c]) for c in range(X.shape[2])]
        lines.append(":".join(chans) + f":{label}")
    path.write_text("\n".join(lines) + "\n")


def trainer(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "trainer", "--log-level", "warning", *args],
                          capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def ts_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ts")
    labels = ("normal", "imbalance", "bearing_fault")
    Xtr, ytr = synthetic.make_windows(n_per_class=12, window=48, labels=labels, seed=1)
    Xte, yte = synthetic.make_windows(n_per_class=10, window=48, labels=labels, seed=2)
    write_ts(d / "vib_TRAIN.ts", Xtr, ytr)
    write_ts(d / "vib_TEST.ts", Xte, yte)
    return d


@pytest.fixture(scope="module")
def fitted_ts(ts_files):
    out = ts_files / "model"
    proc = trainer("fit", str(ts_files / "vib_TRAIN.ts"), "--test",
                   str(ts_files / "vib_TEST.ts"), "--out", str(out), "--seed", "3")
    return out, proc.stdout


@pytest.mark.slow
def test_fit_writes_four_files_and_a_complete_report(fitted_ts):
    out, stdout = fitted_ts
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = json.loads((out / "report.json").read_text())
    assert r["data"]["train"]["cases"] == 36 and r["data"]["test"]["cases"] == 30
    assert r["parameters"]["seed"] == 3 and r["parameters"]["window"] == 48
    sel = r["parameters"]["selection"]
    assert len(sel["candidates"]) >= 2  # defaults were chosen by validation
    assert r["parameters"]["features"] in [c["features"] for c in sel["candidates"]]
    for kind in ("float", "int8"):
        for split in ("train", "test"):
            m = r["metrics"][kind][split]
            assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1
    assert r["metrics"]["float"]["test"]["accuracy"] >= 0.9
    assert r["int8_float_agreement"]["test"] >= 0.95
    assert r["sizes"]["model.onnx"] == (out / "model.onnx").stat().st_size
    assert r["latency"]["int8"]["batch1_us"] > 0 and r["fit_time_s"] > 0
    # the chosen features fit the default budget in its unit (a little timing slack)
    assert r["latency"]["float"]["batch1_reference_us"] <= 1.3 * r["parameters"][
        "selection"]["latency_budget_us"]
    assert r["quantization"]["chosen"] in r["quantization"]["variants"]
    assert "test  accuracy float" in stdout
    # The head's chosen strength is one of the candidates', and the summary says which.
    alphas = {c["alpha"] for c in sel["candidates"]}
    assert len(alphas) > 1 and r["parameters"]["network"]["alpha"] in alphas
    assert f"(L2 alpha {r['parameters']['network']['alpha']:g})" in stdout


@pytest.mark.slow
def test_evaluate_runs_the_onnx_file(fitted_ts, ts_files):
    out, _ = fitted_ts
    report = json.loads((out / "report.json").read_text())
    for model, kind in (("model.onnx", "float"), ("model.int8.onnx", "int8")):
        proc = trainer("evaluate", str(out / model), str(ts_files / "vib_TEST.ts"), "--json")
        result = json.loads(proc.stdout)
        assert result["n"] == 30
        assert result["accuracy"] == pytest.approx(report["metrics"][kind]["test"]["accuracy"])
        assert result["macro_f1"] == pytest.approx(report["metrics"][kind]["test"]["macro_f1"])
        assert np.array(result["confusion"]).sum() == 30
    text = trainer("evaluate", str(out / "model.onnx"), str(ts_files / "vib_TEST.ts")).stdout
    assert "(onnxruntime runtime)" in text and "accuracy" in text and "confusion" in text


def test_evaluate_with_the_numpy_runtime_gives_the_same_scores(fitted_ts, ts_files):
    out, _ = fitted_ts
    for model in ("model.onnx", "model.int8.onnx"):
        runs = {runtime: json.loads(trainer(
            "evaluate", str(out / model), str(ts_files / "vib_TEST.ts"), "--json",
            "--runtime", runtime).stdout) for runtime in ("numpy", "onnxruntime")}
        assert runs["numpy"]["runtime"] == "numpy"
        assert runs["numpy"]["confusion"] == runs["onnxruntime"]["confusion"]


@pytest.mark.slow
def test_inspect_shows_metadata_ops_and_quantization(fitted_ts):
    out, _ = fitted_ts
    text = trainer("inspect", str(out / "model.int8.onnx")).stdout
    assert "input     window tensor(float) ['batch', 48, 3]" in text
    assert "quantization int8" in text and "nodes" in text
    info = json.loads(trainer("inspect", str(out / "model.int8.onnx"), "--json").stdout)
    assert info["labels"] == ["bearing_fault", "imbalance", "normal"]
    assert info["quantization"]["type"] == "int8"
    assert sum(info["op_counts"].values()) == info["nodes"]
    assert info["size_bytes"] == (out / "model.int8.onnx").stat().st_size


@pytest.mark.slow
def test_fit_on_a_csv_recording(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "rec.csv"
    with CsvWriter(path, ["ax", "ay", "az"], device=True, label=True) as w:
        t = 0.0
        for device in ("d1", "d2"):
            for label in ("normal", "imbalance", "normal", "imbalance"):
                sig = synthetic.signal(label, 400, rng)
                ts = t + np.arange(400) / 100.0
                w.write_many(ts, sig, device=[device] * 400, label=[label] * 400)
                t = ts[-1] + 0.01
    out = tmp_path / "m"
    trainer("fit", str(path), "--out", str(out), "--window", "50", "--hop", "25",
            "--features", "stats,spectral", "--hidden", "none")
    r = json.loads((out / "report.json").read_text())
    assert r["parameters"]["features"] == ["stats", "spectral"]
    assert r["parameters"]["hidden_layers"] == []
    assert r["parameters"]["selection"]["method"].startswith("none")
    assert r["data"]["train"]["devices"] == 2
    assert r["metrics"]["float"]["train"]["accuracy"] >= 0.9
    with open(out / "model.onnx", "rb") as f:
        import onnx

        props = {p.key: p.value for p in onnx.load(f).metadata_props}
    info = decode_metadata(props)
    assert (info.window, info.hop, info.sample_rate_hz) == (50, 25, 100.0)
    assert info.channels == ("ax", "ay", "az")
    result = json.loads(trainer("evaluate", str(out / "model.int8.onnx"), str(path),
                                "--json").stdout)
    assert result["n"] == r["data"]["train"]["windows"]


@pytest.mark.slow
def test_failed_fit_leaves_nothing_and_keeps_an_old_model(tmp_path, ts_files):
    bad = tmp_path / "bad.ts"
    bad.write_text("@classLabel true a b\n@data\n1,2,3:a\n1,2,oops:b\n")
    out = tmp_path / "model"
    proc = trainer("fit", str(bad), "--out", str(out), check=False)
    assert proc.returncode == 1
    assert f"{bad}, line 4" in proc.stderr and "'oops'" in proc.stderr
    assert not out.exists()
    out.mkdir()
    (out / "model.onnx").write_bytes(b"previous model")
    proc = trainer("fit", str(ts_files / "vib_TRAIN.ts"), "--out", str(out), "--window", "0",
                   check=False)
    assert proc.returncode == 2 and "positive integer" in proc.stderr
    proc = trainer("fit", str(ts_files / "vib_TRAIN.ts"), "--test", str(bad), "--out",
                   str(out), check=False)
    assert proc.returncode == 1
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]
    assert (out / "model.onnx").read_bytes() == b"previous model"


def test_bad_flags_are_explained(ts_files, tmp_path):
    proc = trainer("fit", str(ts_files / "vib_TRAIN.ts"), "--out", str(tmp_path),
                   "--features", "stats,wavelet", check=False)
    assert proc.returncode == 2 and "unknown feature family 'wavelet'" in proc.stderr
    proc = trainer("fit", str(ts_files / "vib_TRAIN.ts"), "--out", str(tmp_path),
                   "--hidden", "64,x", check=False)
    assert proc.returncode == 2 and "comma-separated layer sizes" in proc.stderr
    proc = trainer("evaluate", str(tmp_path / "missing.onnx"), str(ts_files / "vib_TEST.ts"),
                   check=False)
    assert proc.returncode == 1 and "no such model file" in proc.stderr
