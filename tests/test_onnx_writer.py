"""tests/onnx_writer.py writes the bytes onnx writes, so a board without onnx runs the edge
tests on the very models they run on here (deploy/armhf/verify.sh)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
graph = pytest.importorskip("trainer.graph")

from tests import models, onnx_writer  # noqa: E402
from tests import test_homeassistant as homeassistant  # noqa: E402


def _both(monkeypatch, build, tmp_path, **kwargs) -> tuple[bytes, bytes]:
    """``build`` run with trainer.graph's builder, then with the writer's."""
    out = []
    for module in (graph, onnx_writer):
        for target in (models, homeassistant):
            monkeypatch.setattr(target, "GraphBuilder", module.GraphBuilder)
            monkeypatch.setattr(target, "float_input", module.float_input)
        out.append(build(tmp_path / f"{module.__name__}.onnx", **kwargs).read_bytes())
    return out[0], out[1]


@pytest.mark.parametrize("kwargs", [
    {},
    {"channels": ("a",), "labels": ("p", "q"), "window": 3, "hop": 1, "sample_rate_hz": None,
     "name": "ünïcode", "weights": -np.ones((1, 2), np.float32), "input_name": "samples"},
])
def test_the_mean_model_has_the_bytes_onnx_writes(monkeypatch, tmp_path, kwargs):
    want, got = _both(monkeypatch, models.mean_model, tmp_path, **kwargs)
    assert got == want
    onnx.checker.check_model(onnx.load_from_string(got), full_check=True)


def test_the_anomaly_model_has_the_bytes_onnx_writes(monkeypatch, tmp_path):
    want, got = _both(monkeypatch, homeassistant.anomaly_model, tmp_path, threshold=2.5)
    assert got == want


@pytest.mark.parametrize("attrs", [
    {"axis": -1}, {"keepdims": 0, "axes": [-2, 0, 7]}, {"alpha": 0.2, "mode": "constant"},
    {"scales": [0.5, 2.0], "skip": None, "flag": True},
])
def test_nodes_and_their_attributes_have_the_bytes_onnx_writes(attrs):
    g = onnx_writer.GraphBuilder("g")
    g.op("Op", ["x", "y"], name="n", **attrs)
    want = onnx.helper.make_node("Op", ["x", "y"], ["n"], name="n", **attrs)
    assert g.nodes == [want.SerializeToString()]


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int8, np.uint8, np.int32])
def test_initializers_have_the_bytes_onnx_writes(dtype):
    value = (np.arange(-3, 3).reshape(2, 3) * 7).astype(dtype)
    g = onnx_writer.GraphBuilder("g")
    g.const("w", value)
    assert g.initializers == [onnx.numpy_helper.from_array(value, "w").SerializeToString()]


def test_an_attribute_it_cannot_encode_is_refused_by_name():
    with pytest.raises(TypeError, match="attribute body"):
        onnx_writer.GraphBuilder("g").op("Op", ["x"], body={"a": 1})
