"""The conv family inside the pipeline: --features, export parity, int8 keeps it float."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edge.tools import synthetic
from trainer import quantize
from trainer.export import build_model
from trainer.features.conv import ConvFeatures
from trainer.features.registry import DEFAULT_CANDIDATES, build_families, parse_features
from trainer.pipeline import Pipeline

from .test_cli_fit import trainer, write_ts

COMMON = dict(channels=["x", "y", "z"], window=64, hop=64, name="conv", version="1")


@pytest.fixture(scope="module")
def data():
    labels = ("normal", "imbalance", "misalignment", "bearing_fault")
    Xtr, ytr = synthetic.make_windows(n_per_class=15, window=64, labels=labels, seed=21)
    Xte, yte = synthetic.make_windows(n_per_class=15, window=64, labels=labels, seed=22)
    return Xtr, ytr, Xte, yte


def test_specs_build_conv_and_combinations():
    (conv,) = build_families(parse_features("conv:n_features=168"))
    assert isinstance(conv, ConvFeatures) and conv.n_features == 168
    families = build_families(parse_features("stats,conv,diff_stats"))
    assert [f.name for f in families] == ["stats", "conv"]
    # validation can choose them
    assert any(s.startswith("conv") for c in DEFAULT_CANDIDATES for s in c)
    with pytest.raises(ValueError, match="conv"):
        build_families(["conv:kernels=3"])


@pytest.fixture(scope="module")
def pipeline(data):
    Xtr, ytr, _, _ = data
    return Pipeline(("stats", "conv:n_features=336"), hidden_layers=(), random_state=4,
                    network_params={"alpha": 1.0}).fit(Xtr, ytr)


def test_pipeline_seed_reaches_the_family(pipeline, data):
    conv = pipeline.families_[1]
    assert conv.random_state == 4
    again = Pipeline(("stats", "conv:n_features=336"), hidden_layers=(), random_state=4,
                     network_params={"alpha": 1.0}).fit(data[0], data[1])
    np.testing.assert_array_equal(pipeline.transform(data[2]), again.transform(data[2]))


def test_exported_graph_matches_the_pipeline(pipeline, data):
    _, _, Xte, yte = data
    model = build_model(pipeline, **COMMON)
    P_graph = quantize.run(quantize.session(model), Xte)
    P_numpy = pipeline.predict_proba(Xte)
    np.testing.assert_array_equal(P_graph.argmax(1), P_numpy.argmax(1))
    np.testing.assert_allclose(P_graph, P_numpy, atol=1e-3)
    assert (pipeline.predict(Xte) == yte).mean() >= 0.9


def test_int8_variants_keep_conv_in_float(pipeline, data):
    Xtr, _, Xte, _ = data
    source = build_model(pipeline, fold_scaling=False, **COMMON)
    reference = quantize.run(quantize.session(build_model(pipeline, **COMMON)), Xte).argmax(1)
    for variant in ("static_qdq_tensor", "static_qop_channel"):
        q = quantize.build_variant(source, variant, Xtr)
        ops = {n.op_type for n in q.graph.node}
        assert "QLinearConv" not in ops and "ConvInteger" not in ops
        convs = [n for n in q.graph.node if n.op_type == "Conv"]
        assert convs and all(n.name.startswith("conv_") for n in convs)
        weights = {t.name: t for t in q.graph.initializer}
        assert all(weights[n.input[1]].data_type == onnx.TensorProto.FLOAT for n in convs)
        assert ops & {"QuantizeLinear", "QLinearMatMul", "MatMulInteger"}  # the rest is int8
        agreement = (quantize.run(quantize.session(q), Xte).argmax(1) == reference).mean()
        assert agreement >= 0.97


@pytest.mark.slow
def test_cli_fit_with_conv_features(tmp_path, data):
    Xtr, ytr, Xte, yte = data
    write_ts(tmp_path / "v_TRAIN.ts", Xtr, ytr)
    write_ts(tmp_path / "v_TEST.ts", Xte, yte)
    out = tmp_path / "model"
    trainer("fit", str(tmp_path / "v_TRAIN.ts"), "--test", str(tmp_path / "v_TEST.ts"),
            "--out", str(out), "--features", "stats,conv:n_features=168", "--hidden", "none")
    report = json.loads((out / "report.json").read_text())
    assert report["parameters"]["features"] == ["stats", "conv:n_features=168"]
    assert report["metrics"]["float"]["test"]["accuracy"] >= 0.9
    assert report["int8_float_agreement"]["test"] >= 0.97
    model = onnx.load(out / "model.onnx")
    assert any(n.op_type == "Conv" and n.name.startswith("conv_d") for n in model.graph.node)
    evaluated = json.loads(trainer("evaluate", str(out / "model.onnx"), str(tmp_path / "v_TEST.ts"),
                                   "--json").stdout)
    assert evaluated["accuracy"] == pytest.approx(report["metrics"]["float"]["test"]["accuracy"])
