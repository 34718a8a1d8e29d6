"""Smoke inference for the numpy runtime on a 32-bit ARM board: same models, same answers.

``build DIR`` (on the workstation, needs the trainer) fits trainer models of each kind
(statistics + spectra with a hidden layer, conv, clusters; float and the int8 variants the
trainer ships most) on seeded synthetic windows and writes them with the probabilities this
machine's onnxruntime computes. ``check DIR`` (on the board, needs only the edge install and
no onnxruntime) loads every model through :func:`edge.models.load_model` with the numpy
runtime, runs it and compares, so a crash, an illegal instruction or a wrong result on the
board shows up here. One JSON line reports it, with the time per window of the 32-window
call and the median batch-1 call; ``check DIR --runtime numpy`` on the workstation gives
the same figures there, to compare.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

# The numpy runtime computes the float graph to float32 rounding, and int8 graphs exactly
# per the ONNX definitions, where onnxruntime's fused kernels may round one step apart.
TOLERANCE = {"float": 1e-5, "int8": 2.0 / 255}
VARIANTS = ("weight_only_channel_net", "static_qop_channel_net", "static_qdq_tensor")


def build(out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from edge import contract
    from edge.runtime import open_session
    from tests.runtime_models import PIPELINES, parity_models

    out.mkdir(parents=True, exist_ok=True)
    pipelines = [p for p in PIPELINES if p[0] in ("stats_spectral", "conv", "clusters")]
    built, X = parity_models(VARIANTS, pipelines, n_per_class=8)
    np.save(out / "input.npy", X)
    for (name, variant), data in built.items():
        if name == "conv" and variant != "float":
            continue  # conv int8 adds nothing the others do not cover; keep the board run short
        stem = f"{name}.{variant}"
        (out / f"{stem}.onnx").write_bytes(data)
        sess = open_session(data, runtime="onnxruntime")
        np.save(out / f"{stem}.expected.npy",
                sess.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: X})[0])


def batch1_ms(session, window: np.ndarray, calls: int = 15) -> float:
    """Median milliseconds of a batch-1 call (after two warm-up calls)."""
    from edge import contract

    feed = {contract.INPUT_NAME: np.ascontiguousarray(window[None], np.float32)}
    times = []
    for k in range(calls + 2):
        t0 = time.perf_counter()
        session.run(None, feed)
        if k >= 2:
            times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1e3, 3)


def check(out: Path, runtime: str = "auto") -> int:
    """Run every model in ``out`` with ``runtime`` (on the board: auto, which must pick
    numpy) against the expected probabilities; one JSON line with the figures."""
    from edge import contract
    from edge.models import load_model

    x = np.load(out / "input.npy")
    report: dict = {"numpy": np.__version__,
                    "onnxruntime_importable": _importable("onnxruntime"), "models": {}}
    failed = False
    for path in sorted(out.glob("*.onnx")):
        stem = path.name[:-len(".onnx")]
        model = load_model(path, runtime=runtime)  # board: no onnxruntime, must pick numpy
        t0 = time.perf_counter()
        got = model.session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: x})[0]
        took = time.perf_counter() - t0
        want = np.load(out / f"{stem}.expected.npy")
        diff = float(np.max(np.abs(got - want)))
        tol = TOLERANCE["float" if stem.endswith(".float") else "int8"]
        ok = model.runtime == "numpy" and diff <= tol
        failed |= not ok
        report["models"][stem] = {"runtime": model.runtime, "max_abs_diff": diff,
                                  "tolerance": tol, "windows": len(x),
                                  "ms_per_window": round(took / len(x) * 1e3, 3),
                                  "ms_batch1": batch1_ms(model.session, x[0])}
    print(json.dumps(report))
    return 1 if failed else 0


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("build", "check"))
    parser.add_argument("dir", type=Path)
    parser.add_argument("--runtime", default="auto", choices=("auto", "numpy"),
                        help="check: the runtime (numpy on a workstation, to compare times)")
    args = parser.parse_args(argv)
    if args.mode == "build":
        build(args.dir)
        return 0
    return check(args.dir, args.runtime)


if __name__ == "__main__":
    sys.exit(main())
