"""int8 variants: measured, and the chosen one is batch-independent."""

from __future__ import annotations

import numpy as np
import pytest

from edge import contract, synthetic
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
    ops = {n.op_type for n in model.graph.node}
    assert ops & {"QuantizeLinear", "QLinearMatMul", "MatMulInteger", "DynamicQuantizeLinear"}
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
        keys = {"agreement", "size_bytes", "batch_independent", "latency_us_batch1"}
        assert keys <= set(fig), name


def test_network_nodes_stop_at_the_features(models):
    _, _, _, float_model, source = models
    nodes = quantize.network_nodes(source)
    assert "spectral_dft" not in nodes and "dense_0_matmul" in nodes
    assert "scale_center" not in nodes  # the scaling before scaled_features stays float
    assert quantize.network_nodes(float_model)[0] == "dense_0_matmul"
