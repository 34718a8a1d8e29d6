"""Batch-1 CPU time of saved models, here and on an emulated Pi (edge install only).

``python deploy/arm64/time_models.py DIR`` times every ``DIR/NAME.int8.onnx`` on its
``DIR/NAME.window.npy`` (what ``bench/bench_pipeline.py --vs-minirocket --save-models DIR``
writes) with onnxruntime, one thread, and prints one tab-separated line per model: name,
microseconds of thread CPU time per call (best of 5 blocks). Run it on the
workstation and inside the arm64 root of ``verify-onnxruntime.sh`` (qemu user mode,
Cortex-A72) and compare the ratios between models: emulation is far slower than a real Pi,
so only the relative cost of one model against another carries over.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def cpu_us(session: ort.InferenceSession, window: np.ndarray, calls: int, blocks: int = 5
           ) -> float:
    feed = {session.get_inputs()[0].name: window.astype(np.float32)}
    session.run(None, feed)
    best = float("inf")
    for _ in range(blocks):
        t0 = time.thread_time()
        for _ in range(calls):
            session.run(None, feed)
        best = min(best, (time.thread_time() - t0) / calls)
    return best * 1e6


def main() -> None:
    folder = Path(sys.argv[1])
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    print(f"# onnxruntime {ort.__version__}, {calls} calls x 5 blocks")
    for path in sorted(folder.glob("*.int8.onnx")):
        name = path.name.removesuffix(".int8.onnx")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        window = np.load(folder / f"{name}.window.npy")
        print(f"{name}\t{cpu_us(session, window, calls):.1f}", flush=True)


if __name__ == "__main__":
    main()
