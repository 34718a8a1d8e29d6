"""The numpy runtime: parity with onnxruntime on every kind of model the trainer ships,
refusal of what it does not run, and the runtime choice through the edge's entry points."""

from __future__ import annotations

import numpy as np
import pytest

# The models here are built with onnx (a 32-bit ARM board has none: deploy/armhf/verify.sh
# checks the numpy runtime there with models built on the host, smoke_models.py).
onnx = pytest.importorskip("onnx")
TensorProto, helper = onnx.TensorProto, onnx.helper

from edge import contract  # noqa: E402
from edge.models import ModelError, load_model  # noqa: E402
from edge.runtime import RuntimeUnavailable, open_session, resolve  # noqa: E402
from edge.runtime.numpy_backend import NumpySession, UnsupportedModel  # noqa: E402
from tests.models import mean_model  # noqa: E402
from tests.runtime_models import parity_models, windows  # noqa: E402

# int8: onnxruntime fuses DequantizeLinear -> op -> QuantizeLinear into integer kernels where
# the numpy runtime follows the operator definitions: the two may round a value one step
# apart. Measured: QOperator models identical, QDQ within one step of the output
# quantization (1/255).
INT8_TOLERANCE = 2.0 / 255
# Weight-only: both runtimes compute onnxruntime's MatMulNBits (activations rounded to int8
# per row and block, edge/runtime/numpy_matmul_nbits.py): the same codes, float rounding
# apart (measured <= 6.6e-7 on these models; 0.017 before the numpy runtime did the same).
WEIGHT_ONLY_TOLERANCE = 1e-5
FLOAT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def models():
    return parity_models()


def _outputs(model: bytes, runtime: str, X: np.ndarray) -> dict[str, np.ndarray]:
    sess = open_session(model, runtime=runtime)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {contract.INPUT_NAME: X}), strict=True))


@pytest.mark.slow
def test_outputs_match_onnxruntime_for_every_model_and_variant(models):
    built, X = models
    # windows the models were not fitted on too: outside the calibration ranges
    Xs = np.concatenate([X, windows(4, seed=99)[0]])
    failures = []
    for (name, variant), model in built.items():
        want = _outputs(model, "onnxruntime", Xs)
        got = _outputs(model, "numpy", Xs)
        assert set(got) == set(want)
        tol = (FLOAT_TOLERANCE if variant == "float" else WEIGHT_ONLY_TOLERANCE
               if variant.startswith("weight_only") else INT8_TOLERANCE)
        p_want, p_got = want[contract.OUTPUT_NAME], got[contract.OUTPUT_NAME]
        assert p_got.dtype == np.float32 and p_got.shape == p_want.shape
        error = float(np.abs(p_got - p_want).max())
        agree = float((p_got.argmax(1) == p_want.argmax(1)).mean())
        exact_labels = variant == "float" or variant.startswith("weight_only")
        if error > tol or agree < (1.0 if exact_labels else 0.98):
            failures.append(f"{name}/{variant}: max |dp| {error:.2e}, label agreement {agree}")
        for extra in set(want) - {contract.OUTPUT_NAME}:
            if want[extra].dtype.kind == "f":  # anomaly_score: float, or int8 moved a step
                scale = max(1.0, float(np.abs(want[extra]).max()))
                rtol, atol = (1e-4, 1e-5) if exact_labels else (0.02, 0.01)
                if not np.allclose(got[extra], want[extra], rtol=rtol, atol=atol * scale):
                    failures.append(f"{name}/{variant}: output {extra} differs")
            elif not np.array_equal(got[extra], want[extra]):
                failures.append(f"{name}/{variant}: output {extra} differs")
    assert not failures, "\n".join(failures)


def test_fused_steps_compute_exactly_what_the_nodes_compute(models):
    """Fusion, int8 steps and in-place writes change no bit of any output. Grouped Conv
    nodes run as one matmul of stacked kernels, which BLAS may sum in another order than
    one matmul per node (an ulp, which can move a PPV count by one): exact here, bounded
    like the int8 parity elsewhere."""
    from edge.runtime import numpy_compile

    built, X = models
    fused_ops = set()
    for key, model in built.items():
        fast, plain = NumpySession(model), NumpySession(model, optimize=False)
        fused_ops |= {s.op[1] for s in fast._steps if s.op[0] == numpy_compile.FUSED}
        assert any(s.inplace for s in fast._steps), key
        tol = INT8_TOLERANCE if "conv" in key[0] else 0.0
        for a, b in zip(fast.run(None, {contract.INPUT_NAME: X}),
                        plain.run(None, {contract.INPUT_NAME: X}), strict=True):
            assert a.dtype == b.dtype, key
            np.testing.assert_allclose(a, b, rtol=0, atol=tol, err_msg=str(key))
    # every fusion ran on some model (QOperator kernels with int8 steps keep their names)
    assert {"QuantizeRoundTrip", "CountAbove", "ConvGroup", "ConvRows",
            "QLinearMatMul", "MatMulNBits"} <= fused_ops


@pytest.mark.parametrize("scale, zero_point", [(0.0123, np.int8(3)), (1e-4, np.uint8(0)),
                                               (2.5, np.int8(-128)), (0.1, np.uint8(255))])
def test_round_trip_lookup_gives_the_arithmetic_values_at_every_step_edge(scale, zero_point):
    """The looked-up QuantizeLinear -> DequantizeLinear round trip (small arrays) finds the
    same code as divide-and-round for the floats either side of every rounding edge,
    beyond the saturation bounds, and for large arrays (the arithmetic path)."""
    from edge.runtime.numpy_kernels import TABLE_UP_TO, Scale

    q = Scale(np.array(scale, np.float32), np.array(zero_point))
    run = q.round_trip_kernel()
    edges = ((np.arange(-300, 300) + 0.5) * np.float32(scale)).astype(np.float32)
    x = np.concatenate([edges, np.nextafter(edges, np.float32(np.inf)),
                        np.nextafter(edges, np.float32(-np.inf)),
                        np.array([0.0, 1e30, -1e30], np.float32)])
    for chunk in np.array_split(x, len(x) // TABLE_UP_TO + 1) + [x]:
        np.testing.assert_array_equal(run(chunk.copy()), q.round_trip(chunk.copy()))


def test_floating_point_errors_are_silent_during_a_run_and_restored_after(monkeypatch):
    """exp overflow in a sigmoid's tail is the right 0, not a RuntimeWarning per window;
    numpy's error state outside the run is left as it was (also with numpy < 2's
    np.errstate fallback)."""
    import sys
    import warnings

    from edge.runtime import numpy_compile

    node = helper.make_node("Sigmoid", ["window"], ["probabilities"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "window", TensorProto.FLOAT, [None, 2])], [helper.make_tensor_value_info(
            "probabilities", TensorProto.FLOAT, [None, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = np.array([[-1000.0, 0.0]], np.float32)
    fallback = numpy_compile._quiet_errors
    monkeypatch.setitem(sys.modules, "numpy._core._ufunc_config", None)  # as numpy < 2
    enter, reset, state = fallback()
    monkeypatch.undo()
    for quiet in (None, (enter, reset, state)):
        if quiet:
            monkeypatch.setattr(numpy_compile, "_SET_QUIET", enter)
            monkeypatch.setattr(numpy_compile, "_RESET", reset)
            monkeypatch.setattr(numpy_compile, "_QUIET", state)
        sess = NumpySession(model.SerializeToString())
        before = np.geterr()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            (p,) = sess.run(None, {"window": x})
        np.testing.assert_array_equal(p, [[0.0, 0.5]])
        assert np.geterr() == before
        with pytest.warns(RuntimeWarning):
            np.exp(np.float32(1000.0))  # outside a run numpy warns as usual


def test_conv_strides_dilations_and_pads_match_onnxruntime():
    """Strided Convs (the pruned pool on long windows) and unstrided ones with different
    pads on one input (grouped into one matmul) give onnxruntime's outputs."""
    from onnx import numpy_helper

    rng = np.random.default_rng(3)
    specs = [(1, 1, (4, 4)), (1, 1, (0, 0)), (1, 1, (2, 3)), (2, 2, (4, 4)), (2, 2, (4, 4)),
             (2, 1, (0, 0)), (3, 2, (8, 8)), (4, 3, (0, 1))]  # (stride, dilation, pads)
    nodes, inits, outputs = [], [], []
    for k, (stride, dilation, pads) in enumerate(specs):
        w = rng.standard_normal((3 + k % 2, 2, 5)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        nodes.append(helper.make_node("Conv", ["window", f"w{k}"], [f"y{k}"], strides=[stride],
                                      dilations=[dilation], pads=list(pads),
                                      kernel_shape=[5]))
        outputs.append(helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "window", TensorProto.FLOAT, [None, 2, 41])], outputs, inits)
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]) \
        .SerializeToString()
    fast, plain = NumpySession(data), NumpySession(data, optimize=False)
    assert sum(s.op[1] == "ConvGroup" for s in fast._steps) < len(specs)  # some grouped
    x3 = rng.standard_normal((3, 2, 41)).astype(np.float32)
    for x in (x3[:1], x3):  # taps gathered by np.take (few series), from a strided view
        want = open_session(data, runtime="onnxruntime").run(None, {"window": x})
        for a, b, c in zip(fast.run(None, {"window": x}), plain.run(None, {"window": x}),
                           want, strict=True):
            assert a.shape == c.shape
            np.testing.assert_allclose(a, c, atol=1e-5)
            # stacked kernels: BLAS may sum a row in another order (an ulp or two)
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def _weight_only_matmul(w, scale, zero_point, axis=None) -> bytes:
    from onnx import numpy_helper

    k, n = w.shape
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(scale, "s"),
             numpy_helper.from_array(zero_point, "z")]
    nodes = [helper.make_node("DequantizeLinear", ["w", "s", "z"], ["w_float"],
                              **({} if axis is None else {"axis": axis})),
             helper.make_node("MatMul", ["window", "w_float"], ["probabilities"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "window", TensorProto.FLOAT, [None, k])], [helper.make_tensor_value_info(
            "probabilities", TensorProto.FLOAT, [None, n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]) \
        .SerializeToString()


@pytest.mark.parametrize("per_channel, zero_point, k", [(True, 0, 70), (True, 3, 70),
                                                        (False, -5, 70), (True, 0, 20)])
def test_weight_only_matmul_rounds_the_activations_like_onnxruntime(per_channel, zero_point,
                                                                     k):
    """DequantizeLinear -> MatMul runs as onnxruntime's MatMulNBits does (activations to
    int8 per row in blocks of 32, the last one shorter, an all-zero block included):
    onnxruntime's outputs to float rounding, far from the float product, and each row
    quantized on its own: alone or in a batch of rows 5x apart in size, the same result
    but for BLAS rounding (as a float MatMul's)."""
    rng = np.random.default_rng(5)
    n = 6
    w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    scale = (rng.random(n) * 0.01 + 1e-3).astype(np.float32) if per_channel \
        else np.array(0.004, np.float32)
    zp = np.full(scale.shape, zero_point, np.int8)
    model = _weight_only_matmul(w, scale, zp, axis=1 if per_channel else None)
    x = (rng.standard_normal((9, k)) * np.linspace(1, 5, 9)[:, None]).astype(np.float32)
    x[0, slice(32, 64) if k > 32 else slice(None)] = 0.0  # an all-zero block
    want = open_session(model, runtime="onnxruntime").run(None, {"window": x})[0]
    sess = NumpySession(model)
    assert [s.op[1] for s in sess._steps] == ["MatMulNBits"]
    got = sess.run(None, {"window": x})[0]
    product = x @ ((w.astype(np.float32) - zp.astype(np.float32)) * scale)
    scale_of = np.abs(want).max()
    if np.abs(product - want).max() <= 1e-5 * scale_of:
        # Seen under emulation of a Cortex-A72 (Pi 4) with onnxruntime 1.32: no rounding.
        pytest.skip("this CPU's onnxruntime computes MatMulNBits in float, so there is no "
                    "rounding to match (README: the numpy runtime's parity)")
    assert np.abs(got - want).max() <= 1e-6 * scale_of
    assert np.abs(product - want).max() > 1e-3 * scale_of  # the rounding is what is matched
    alone = np.concatenate([sess.run(None, {"window": x[i:i + 1]})[0] for i in range(len(x))])
    assert np.abs(alone - got).max() <= 1e-6 * scale_of


def test_weight_only_matmul_onnxruntime_does_not_fuse_stays_float():
    """A per-tensor scale of shape [1] with N > 1 is not a weight onnxruntime fuses into
    MatMulNBits: both runtimes multiply by the float weights."""
    w = np.arange(-30, 30, dtype=np.int8).reshape(20, 3)
    model = _weight_only_matmul(w, np.array([0.01], np.float32), np.zeros(1, np.int8))
    x = np.random.default_rng(1).standard_normal((4, 20)).astype(np.float32)
    sess = NumpySession(model)
    assert "MatMulNBits" not in {s.op[1] for s in sess._steps}
    want = open_session(model, runtime="onnxruntime").run(None, {"window": x})[0]
    np.testing.assert_allclose(sess.run(None, {"window": x})[0], want, rtol=1e-6, atol=1e-6)


def test_numpy_runtime_is_batch_independent_on_an_int8_model(models):
    built, X = models
    sess = NumpySession(built[("stats_spectral", "static_qop_channel")])
    together = sess.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: X[:8]})[0]
    alone = np.concatenate([sess.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: X[i:i + 1]})[0]
                            for i in range(8)])
    assert np.array_equal(together, alone)


def test_every_operator_the_trainer_emitted_is_in_the_list_and_runs(models):
    built, _ = models
    from edge.runtime.numpy_backend import KERNELS

    seen = set()
    for model in built.values():
        seen |= contract.model_ops(model)
    assert seen <= contract.SUPPORTED_OPS, sorted(seen - contract.SUPPORTED_OPS)
    assert seen <= set(KERNELS), sorted(seen - set(KERNELS))


def _foreign_model(op: str = "Relu", **attrs) -> bytes:
    node = helper.make_node(op, ["window"], ["probabilities"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "window", TensorProto.FLOAT, [None, 2])], [helper.make_tensor_value_info(
            "probabilities", TensorProto.FLOAT, [None, 2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]) \
        .SerializeToString()


def test_an_operator_outside_the_list_is_refused_at_load_by_name():
    with pytest.raises(UnsupportedModel, match=r"operator\(s\) Relu not supported"):
        NumpySession(_foreign_model("Relu"))


def test_an_attribute_the_kernel_does_not_implement_is_refused_at_load():
    with pytest.raises(UnsupportedModel, match="Softmax.*attribute"):
        NumpySession(_foreign_model("Softmax", axis=1, bogus=3))
    with pytest.raises(UnsupportedModel, match="Pad mode='wrap'"):
        NumpySession(_foreign_model("Pad", mode="wrap"))


@pytest.mark.parametrize("data, message", [
    (b"", "no graph"),
    (b"\x0a\xff\xff", "truncated"),
    (b"not a model at all, just text", "wire type|truncated|no graph"),
])
def test_bytes_that_are_not_a_model_are_refused_with_a_reason(data, message):
    with pytest.raises(UnsupportedModel, match=message):
        NumpySession(data)


def test_external_data_is_refused():
    tensor = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("float_data")
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    node = helper.make_node("Add", ["window", "w"], ["probabilities"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "window", TensorProto.FLOAT, [None, 2])], [helper.make_tensor_value_info(
            "probabilities", TensorProto.FLOAT, [None, 2])], [tensor])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(UnsupportedModel, match="external data"):
        NumpySession(model.SerializeToString())


def test_load_model_reports_the_runtime_and_the_same_labels(tmp_path):
    path = mean_model(tmp_path / "m.onnx")
    x = np.linspace(-1, 3, 4 * 8 * 3, dtype=np.float32).reshape(4, 8, 3)
    by_runtime = {r: load_model(path, runtime=r) for r in ("numpy", "onnxruntime")}
    assert by_runtime["numpy"].runtime == "numpy"
    assert by_runtime["onnxruntime"].runtime == "onnxruntime"
    assert load_model(path).runtime == resolve("auto") == "onnxruntime"
    np.testing.assert_allclose(by_runtime["numpy"].predict(x), by_runtime["onnxruntime"]
                               .predict(x), atol=FLOAT_TOLERANCE)
    assert by_runtime["numpy"].info == by_runtime["onnxruntime"].info


def test_load_model_with_numpy_names_the_unsupported_operator(tmp_path):
    path = tmp_path / "relu.onnx"
    path.write_bytes(_foreign_model("Relu"))
    with pytest.raises(ModelError, match="Relu"):  # the allow-list refuses it first
        load_model(path, runtime="numpy")
    # allowed for onnxruntime (allow_ops), the numpy runtime still cannot run it
    with pytest.raises(ModelError, match="numpy runtime.*Relu"):
        load_model(path, runtime="numpy", extra_ops=frozenset({("", "Relu")}))


def test_auto_falls_back_to_numpy_without_onnxruntime(monkeypatch):
    from edge.runtime import onnxruntime_backend

    monkeypatch.setattr(onnxruntime_backend, "available", lambda: False)
    assert resolve("auto") == "numpy"
    with pytest.raises(RuntimeUnavailable, match="--runtime numpy"):
        resolve("onnxruntime")
    with pytest.raises(ValueError, match="runtime must be one of"):
        resolve("tflite")


def test_export_fails_when_a_model_strays_from_the_list():
    from trainer.export import check_operators

    with pytest.raises(contract.ContractError, match="Relu outside edge.contract.SUPPORTED_OPS"):
        check_operators(onnx.load_from_string(_foreign_model("Relu")))


def test_the_dynamic_int8_variant_is_outside_the_list_and_refused(models):
    """The trainer measures ``dynamic`` (DynamicQuantizeLinear, MatMulInteger) and never
    ships it (tests/test_quantize.py): the export check and the numpy runtime refuse it."""
    from trainer import quantize
    from trainer.export import check_operators

    built, X = models
    dynamic = quantize.build_variant(onnx.load_from_string(built[("raw_stats", "float")]),
                                     "dynamic", X)
    ops = {n.op_type for n in dynamic.graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    with pytest.raises(contract.ContractError, match="DynamicQuantizeLinear"):
        check_operators(dynamic)
    with pytest.raises(UnsupportedModel, match="DynamicQuantizeLinear.*not supported"):
        NumpySession(dynamic.SerializeToString())


def test_auto_runs_numpy_in_a_process_where_onnxruntime_does_not_import(tmp_path):
    """As on a Pi Zero: `sigmoid-edge run --check-config` with onnxruntime unimportable."""
    import subprocess
    import sys

    path = mean_model(tmp_path / "m.onnx")
    code = ("import sys; sys.modules['onnxruntime'] = None\n"  # import onnxruntime -> ImportError
            "from edge.cli import main\n"
            "code = main(sys.argv[1:])\n"
            "assert 'onnxruntime' not in sys.modules or sys.modules['onnxruntime'] is None\n"
            "sys.exit(code)")
    proc = subprocess.run(
        [sys.executable, "-c", code, "run", "--model", str(path), "--broker",
         "mqtt://localhost:1", "--check-config"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "runtime numpy" in proc.stdout
    forced = subprocess.run(
        [sys.executable, "-c", code, "run", "--model", str(path), "--broker",
         "mqtt://localhost:1", "--runtime", "onnxruntime", "--check-config"],
        capture_output=True, text=True, timeout=60)
    assert forced.returncode == 1 and "use --runtime numpy" in forced.stderr
