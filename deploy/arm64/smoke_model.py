"""Smoke inference for an onnxruntime build: the same models, the same input, the same answers.

``build DIR`` (on the workstation, needs ``onnx`` and ``onnxruntime``) writes a small sigmoid
network that follows the model contract (``model.onnx``), its int8 dynamic quantization
(``model.int8.onnx``), a seeded synthetic input and the probabilities this machine's
onnxruntime computes for both. ``check DIR`` (on the device, needs only the edge install)
loads both models through the contract, runs them and compares with the reference, so a
crash, an illegal instruction or a wrong result on the device shows up here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

WINDOW, CHANNELS, HIDDEN = 64, 3, 32
# int8 kernels differ between CPUs (x86 VNNI vs ARM dot-product), so the int8 model's
# probabilities may move a little; the float model must agree to float rounding.
TOLERANCE = {"model.onnx": 1e-4, "model.int8.onnx": 2e-2}


def build(out: Path) -> None:
    import onnxruntime as ort
    from onnx import save
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edge import contract
    from edge.tools import synthetic
    from trainer.graph import GraphBuilder, float_input

    out.mkdir(parents=True, exist_ok=True)
    x, _ = synthetic.make_windows(n_per_class=4, window=WINDOW, channels=CHANNELS, seed=3)
    rng = np.random.default_rng(0)
    g = GraphBuilder("smoke")
    flat_shape = g.const("flat_shape", np.array([-1, WINDOW * CHANNELS]))
    flat = g.op("Reshape", [contract.INPUT_NAME, flat_shape], name="flatten")
    w1 = g.const("dense_1_weights", rng.normal(0, 0.05, (WINDOW * CHANNELS, HIDDEN)))
    b1 = g.const("dense_1_bias", rng.normal(0, 0.1, HIDDEN))
    h = g.op("Sigmoid", [g.op("Add", [g.op("MatMul", [flat, w1], name="dense_1"), b1])],
             name="sigmoid_1")
    w2 = g.const("dense_2_weights", rng.normal(0, 0.5, (HIDDEN, len(synthetic.LABELS))))
    b2 = g.const("dense_2_bias", np.zeros(len(synthetic.LABELS)))
    logits = g.op("Add", [g.op("MatMul", [h, w2], name="dense_2"), b2], name="logits")
    g.rename(g.op("Softmax", [logits], axis=-1), contract.OUTPUT_NAME)
    meta = contract.encode_metadata({
        contract.LABELS: list(synthetic.LABELS), contract.CHANNELS: list(synthetic.CHANNELS),
        contract.WINDOW: WINDOW, contract.HOP: WINDOW, contract.NAME: "arm64-smoke",
        contract.VERSION: "1",
    })
    model = g.model([float_input(contract.INPUT_NAME, [None, WINDOW, CHANNELS])],
                    [float_input(contract.OUTPUT_NAME, [None, len(synthetic.LABELS)])], meta)
    save(model, out / "model.onnx")
    quantize_dynamic(out / "model.onnx", out / "model.int8.onnx", weight_type=QuantType.QInt8)
    np.save(out / "input.npy", x)
    for name in TOLERANCE:
        sess = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        np.save(out / f"{name}.expected.npy", sess.run(None, {contract.INPUT_NAME: x})[0])


def check(out: Path) -> int:
    import onnxruntime as ort

    from edge import contract

    x = np.load(out / "input.npy")
    report = {"onnxruntime": ort.__version__, "numpy": np.__version__}
    worst = 0.0
    for name, tol in TOLERANCE.items():
        sess = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        info = contract.decode_metadata(sess.get_modelmeta().custom_metadata_map)
        contract.check_session(sess, info)
        got = sess.run(None, {contract.INPUT_NAME: x})[0]
        diff = float(np.max(np.abs(got - np.load(out / f"{name}.expected.npy"))))
        report[name] = {"max_abs_diff": diff, "tolerance": tol,
                        "rows_sum_to_1": bool(np.allclose(got.sum(axis=1), 1, atol=1e-4))}
        if diff > tol or not report[name]["rows_sum_to_1"]:
            worst = max(worst, diff) or 1.0
    print(json.dumps(report))
    return 1 if worst else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("build", "check"))
    parser.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    if args.mode == "build":
        build(args.dir)
        return 0
    return check(args.dir)


if __name__ == "__main__":
    sys.exit(main())
