"""int8 variants: measured, and the chosen one is batch-independent."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge import contract
from edge.tools import synthetic
from trainer import quantize
from trainer.export import build_model
from trainer.pipeline import Pipeline


@pytest.fixture(scope="module")
def models():
    X, y = synthetic.make_windows(n_per_class=25, window=64, channels=3, seed=11)
    pipe = Pipeline(("stats", "diff_stats", "spectral", "diff_spectral"), hidden_layers=(16,),
                    random_state=0).fit(X, y)
    common = dict(channels=["x", "y", "z"], window=64, hop=64, name="q", version="1")
    return pipe, X, y, build_model(pipe, **common), build_model(pipe, fold_scaling=False,
                                                                    **common)


@pytest.fixture(scope="module")
def chosen(models):
    pipe, X, y, float_model, source = models
    return quantize.choose(source, X, X, y, [str(c) for c in pipe.classes_],
                           reference_model=float_model)


def test_chosen_int8_model_is_batch_independent(models, chosen):
    _, X, _, _, _ = models
    model, report = chosen
    sess = quantize.session(model)
    together = sess.run(["probabilities"], {"window": X[:40]})[0]
    alone = np.concatenate([sess.run(["probabilities"], {"window": X[i:i + 1]})[0]
                            for i in range(40)])
    assert np.array_equal(together, alone)
    assert report["chosen"] != "dynamic"
    assert report["variants"][report["chosen"]]["batch_independent"] is True
    # The check can fail: dynamic quantization takes its ranges from the whole batch.
    assert report["variants"]["dynamic"]["batch_independent"] is False


def test_choice_meets_agreement_and_is_written_to_metadata(models, chosen):
    _, X, y, float_model, _ = models
    model, report = chosen
    assert report["goal_met"] is True
    figures = report["variants"][report["chosen"]]
    assert figures["agreement"] >= quantize.MIN_AGREEMENT
    # int8 in the file: every variant stores some initializers as 8-bit integers.
    eight_bit = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    assert any(t.data_type in eight_bit for t in model.graph.initializer)
    sess = quantize.session(model)
    info = contract.decode_metadata(sess.get_modelmeta().custom_metadata_map)
    contract.check_session(sess, info)
    q = info.extra["quantization"]
    assert q["type"] == "int8" and q["method"] == report["chosen"]
    assert q["agreement"] == figures["agreement"]
    labels = np.array(info.labels)[quantize.run(sess, X).argmax(1)]
    assert (labels == y).mean() >= report["float"]["accuracy"] - quantize.MAX_ACCURACY_LOSS


def test_every_variant_is_measured(chosen):
    _, report = chosen
    assert set(report["variants"]) == set(quantize.variant_names())
    for name, fig in report["variants"].items():
        keys = {"agreement", "size_bytes", "batch_independent"}
        assert keys <= set(fig), name
    # The chosen one was timed, and every timed one is batch-independent (a candidate).
    assert report["variants"][report["chosen"]]["latency_us_batch1"] > 0
    timed = [n for n, f in report["variants"].items() if "latency_us_batch1" in f]
    assert all(report["variants"][n]["batch_independent"] for n in timed)
    assert not report["variants"]["dynamic"].get("latency_us_batch1")  # never a candidate


def test_static_variants_that_cannot_win_skip_their_held_out_calibrations(models, chosen,
                                                                          monkeypatch):
    """Weight-only variants are measured first and set the error bar; a static variant far
    above it skips two calibrations, and the same variants compete on latency as after a
    full check (which of them is fastest is the clock's to say)."""
    pipe, X, y, float_model, source = models
    _, report = chosen
    skipped = [n for n, f in report["variants"].items() if "heldout" in f]
    assert skipped and all(n.startswith("static_") for n in skipped)
    assert all("heldout_agreement" not in report["variants"][n] for n in skipped)
    assert list(report["variants"]) == quantize.variant_names()  # the usual order
    monkeypatch.setattr(quantize, "HELDOUT_MARGIN", float("inf"))
    _, full = quantize.choose(source, X, X, y, [str(c) for c in pipe.classes_],
                              reference_model=float_model)
    def timed(r):
        return {n for n, f in r["variants"].items() if "latency_us_batch1" in f}

    assert timed(full) == timed(report) and full["chosen"] in timed(report)
    checked = [n for n in skipped if "heldout" not in full["variants"][n]]
    assert checked  # the margin, not only the agreement bar, skipped these
    for n in checked:
        assert "heldout_probability_error" in full["variants"][n]


def test_network_nodes_stop_at_the_features(models):
    _, _, _, float_model, source = models
    nodes = quantize.network_nodes(source)
    assert "spectral_dft" not in nodes and "dense_0_matmul" in nodes
    assert "scale_center" not in nodes  # the scaling before scaled_features stays float
    assert quantize.network_nodes(float_model)[0] == "dense_0_matmul"


WEIGHT_ONLY = ("weight_only_tensor_net", "weight_only_channel_net")


@pytest.mark.parametrize("name", WEIGHT_ONLY)
def test_weight_only_stores_the_network_weights_as_int8(models, name):
    _, X, _, _, source = models
    model = onnx.load_from_string(quantize.build_variant(source, name, X).SerializeToString())
    onnx.checker.check_model(model, full_check=True)
    before = {t.name: numpy_helper.to_array(t) for t in source.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    network = set(quantize.network_nodes(source))
    weights = [n.input[1] for n in source.graph.node
               if n.name in network and n.op_type == "MatMul" and n.input[1] in before]
    assert len(weights) == 2  # hidden layer and output layer
    for w in weights:
        assert w not in after  # the float copy is gone
        dq = producer[w]
        assert dq.op_type == "DequantizeLinear"
        q, scale, zero = (after[i] for i in dq.input)
        assert q.dtype == np.int8 and q.shape == before[w].shape
        assert zero.dtype == np.int8 and not zero.any()  # symmetric
        assert scale.shape == ((before[w].shape[1],) if "channel" in name else ())
        # Dequantized weights are within half a step of the float ones.
        axis = {a.name: a.i for a in dq.attribute}.get("axis", 1)
        assert axis == 1
        assert np.all(np.abs(q * scale - before[w]) <= scale / 2 + 1e-7)
    # Feature extraction constants (e.g. the DFT matrices) stay float.
    assert all(after[k].dtype == v.dtype for k, v in before.items() if k in after)
    assert {n.op_type for n in model.graph.node} - {n.op_type for n in source.graph.node} \
        == {"DequantizeLinear"}  # activations stay float: no QuantizeLinear, no QLinear*
    weight_bytes = sum(before[w].nbytes for w in weights)
    int8_bytes = sum(after[f"{w}_quantized"].nbytes for w in weights)
    assert int8_bytes * 4 == weight_bytes
    assert len(model.SerializeToString()) < len(source.SerializeToString())


@pytest.mark.parametrize("name", WEIGHT_ONLY)
def test_weight_only_is_close_to_float_and_batch_independent(models, name):
    _, _, _, float_model, source = models
    X, _ = synthetic.make_windows(n_per_class=30, window=64, channels=3, seed=5, noise=0.5)
    sess = quantize.session(quantize.build_variant(source, name, X))
    P = quantize.run(sess, X)
    R = quantize.run(quantize.session(float_model), X)
    assert np.abs(P - R).max() < 0.02
    assert np.abs(P - R).mean() < 3e-3
    assert (P.argmax(1) == R.argmax(1)).mean() >= quantize.MIN_AGREEMENT
    together = sess.run(["probabilities"], {"window": X[:40]})[0]
    alone = np.concatenate([sess.run(["probabilities"], {"window": X[i:i + 1]})[0]
                            for i in range(40)])
    assert np.array_equal(together, alone)


def test_weight_only_rejects_unknown_names_and_models_without_a_network(models):
    _, X, _, _, source = models
    with pytest.raises(ValueError, match="unknown int8 variant"):
        quantize.build_variant(source, "weight_only_block_net", X)
    bare = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["window"], ["probabilities"])], "g",
        [onnx.helper.make_tensor_value_info("window", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, [1])]))
    with pytest.raises(ValueError, match="not a pipeline model"):
        quantize.weight_only(bare)


@pytest.mark.slow
def test_choose_takes_weight_only_when_static_ranges_miss_the_evaluation_windows(models):
    """Calibrated on clean windows, evaluated on noisier ones: the static activation ranges
    clip the larger features (as on test sets outside the training ranges), weight-only
    quantization has no ranges to miss."""
    pipe, X, _, float_model, source = models
    X_eval, y_eval = synthetic.make_windows(n_per_class=25, window=64, channels=3, seed=12,
                                            noise=0.6)
    static = [f"static_{f}_{g}_net" for f in quantize.FORMATS for g in quantize.GRANULARITIES]
    model, report = quantize.choose(source, X, X_eval, y_eval,
                                    [str(c) for c in pipe.classes_],
                                    candidates=static + list(WEIGHT_ONLY),
                                    reference_model=float_model)
    figures = report["variants"]
    assert all(figures[n]["agreement"] < quantize.MIN_AGREEMENT for n in static)
    assert report["chosen"] in WEIGHT_ONLY and report["goal_met"] is True
    assert figures[report["chosen"]]["agreement"] >= quantize.MIN_AGREEMENT
    assert figures[report["chosen"]]["batch_independent"] is True
    info = contract.decode_metadata(quantize.session(model).get_modelmeta().custom_metadata_map)
    assert info.extra["quantization"]["method"] == report["chosen"]
    # Without the weight-only candidates the bar is missed and the report says so.
    _, without = quantize.choose(source, X, X_eval, y_eval, [str(c) for c in pipe.classes_],
                                 candidates=static, reference_model=float_model)
    assert without["goal_met"] is False and without["chosen"] in static
