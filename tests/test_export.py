"""The exported file is ONE checked graph that follows the contract and matches numpy."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge import contract
from edge.atomic import write_file
from trainer.export import build_model, save_model
from trainer.pipeline import Pipeline

FEATURES = ("stats", "diff_stats", "spectral", "diff_spectral", "raw")


@pytest.fixture(scope="module")
def fitted(vibration):
    X, y = vibration
    pipe = Pipeline(FEATURES, hidden_layers=(8,), random_state=0,
                    network_params={"max_epochs": 300}).fit(X, y)
    return pipe, X, y


def export(pipe, **kw):
    args = dict(channels=["x", "y", "z"], window=64, hop=32, name="vib", version="7",
                sample_rate_hz=100.0, training={"cases": 120})
    args.update(kw)
    return build_model(pipe, **args)


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("fold", [True, False])
def test_graph_matches_numpy_for_any_batch_size(fitted, fold):
    pipe, X, _ = fitted
    sess = session(export(pipe, fold_scaling=fold))
    want = pipe.predict_proba(X)
    for n in (1, 7, len(X)):
        got = sess.run(["probabilities"], {"window": X[:n]})[0]
        np.testing.assert_allclose(got, want[:n], atol=2e-5)
    assert np.allclose(want.sum(axis=1), 1, atol=1e-5)


def test_contract_metadata_and_session_check(fitted):
    pipe, _, _ = fitted
    model = export(pipe)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 18
    sess = session(model)
    info = contract.decode_metadata(sess.get_modelmeta().custom_metadata_map)
    contract.check_session(sess, info)
    assert info.labels == tuple(pipe.classes_.tolist())
    assert (info.window, info.hop, info.sample_rate_hz) == (64, 32, 100.0)
    assert (info.name, info.version, info.channels) == ("vib", "7", ("x", "y", "z"))
    assert info.extra["features"]["specs"] == list(FEATURES)
    assert info.extra["features"]["n_features"] == pipe.n_features_
    assert info.extra["training"] == {"cases": 120}
    assert info.extra["quantization"] == {"type": "float32"}
    inp = sess.get_inputs()[0]
    assert inp.shape[0] == "batch" and inp.shape[1:] == [64, 3]


def test_node_names_are_unique_and_readable(fitted):
    pipe, _, _ = fitted
    model = export(pipe, fold_scaling=False)
    names = [n.name for n in model.graph.node]
    assert len(set(names)) == len(names) and all(names)
    for expected in ("channels_first", "first_difference", "stats_mean", "spectral_dft",
                     "raw_downsample", "features", "scaled_features"):
        assert expected in names
    folded = [n.name for n in export(pipe).graph.node]
    assert "scaled_features" not in folded and len(folded) == len(names) - 2


def test_metadata_must_match_the_pipeline(fitted):
    pipe, _, _ = fitted
    with pytest.raises(ValueError, match=r"fitted on windows \[64, 3\]"):
        export(pipe, window=100)
    with pytest.raises(RuntimeError, match="not fitted"):
        Pipeline(("stats",)).transform(np.zeros((1, 4, 1)))


def test_pipeline_rejects_bad_windows(fitted):
    pipe, X, _ = fitted
    with pytest.raises(ValueError, match=r"shape \[n, 64, 3\]"):
        pipe.predict(X[:, :10])
    bad = X[:2].copy()
    bad[0, 3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pipe.predict(bad)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old model")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_file(path, b"new model")
    assert path.read_bytes() == b"old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_save_model_round_trips(fitted, tmp_path):
    pipe, X, _ = fitted
    path = tmp_path / "m.onnx"
    size = save_model(export(pipe), path)
    assert size == path.stat().st_size
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"window": X[:3]})[0], pipe.predict_proba(X[:3]),
                               atol=2e-5)
