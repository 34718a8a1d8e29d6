"""onnxruntime on the workstation: open a model, run it over many windows, time it.

The one place the trainer (quantize, fit, fit-anomaly, cluster, evaluate) and the
benchmarks get an onnxruntime session and measure one. Sessions are opened by
:func:`edge.runtime.open_session`, so a model is measured the way the daemon runs it.

Timing notes: with one intra-op thread onnxruntime runs in the calling thread, so the
thread's CPU time counts only the graph's own work even while other processes load the
machine (where wall time can double); the wall figures are kept beside it.

The latency budget is not measured in plain CPU time: on a shared virtual machine that
still grows 2-5x with the neighbours' load (cache sharing, SMT, the hypervisor taking the
core), so a budget in CPU microseconds chose 21 conv features at one moment and 105 at
another. :func:`reference_latency_us` times a model in alternation with a fixed reference
graph and reports the ratio in *reference microseconds*: the time on an idle core of the
project's benchmark machine (:data:`REFERENCE_US`). Load slows both alike, so the choice
stays the same on a busy machine, and a budget means the same work on every workstation
(what matters for the Pi, whose speed does not depend on the training machine's).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edge import contract
from edge.runtime import open_session


def session(model, threads: int = 1, runtime: str = "onnxruntime"):
    """A session for ``model`` (``onnx.ModelProto``, bytes or a path); ``runtime`` is an
    :mod:`edge.runtime` name (``numpy``: what a Pi without onnxruntime runs)."""
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    return open_session(model if isinstance(model, bytes) else str(model), threads, runtime)


def load(path, runtime: str = "onnxruntime"):
    """A session (1 thread) of ``runtime`` for the file ``path`` and its checked metadata.

    Returns
    -------
    (session, edge.contract.ModelInfo)

    Raises
    ------
    FileNotFoundError, edge.contract.ContractError
        No such file; the runtime cannot load it, or it breaks the contract.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        sess = session(path, runtime=runtime)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise contract.ContractError(f"{path}: {runtime} cannot load it: {exc}") from None
    info = contract.decode_metadata(sess.get_modelmeta().custom_metadata_map)
    contract.check_session(sess, info)
    return sess, info


def run_outputs(sess, X: np.ndarray, names: list[str], batch: int = 256) -> list[np.ndarray]:
    """The outputs ``names`` of ``sess`` over windows ``X``, ``batch`` windows per call."""
    parts = [sess.run(names, {contract.INPUT_NAME: X[i:i + batch]})
             for i in range(0, len(X), batch)]
    if not parts:
        return [np.empty((0, 0), np.float32) for _ in names]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(names))]


def run(sess, X: np.ndarray, batch: int = 256) -> np.ndarray:
    """Probabilities for windows ``X``, ``batch`` windows per call."""
    return run_outputs(sess, X, [contract.OUTPUT_NAME], batch)[0]


class Timing(NamedTuple):
    """Seconds per ``sess.run`` call over ``repeats`` blocks of calls."""

    wall_median: float
    wall_best: float
    cpu_median: float


def timing(sess, x: np.ndarray, *, min_time: float = 0.1, repeats: int = 5,
           warmup: int = 20, calls: int | None = None) -> Timing:
    """Time ``sess`` on the batch ``x``: ``repeats`` blocks of ``calls`` calls each.

    Without ``calls``, as many as fit in ``min_time / repeats`` seconds.
    """
    feed = {contract.INPUT_NAME: np.ascontiguousarray(x, np.float32)}
    for _ in range(warmup):
        sess.run(None, feed)
    n = calls or 0
    t0 = time.perf_counter()
    while not calls and time.perf_counter() - t0 < min_time / repeats:
        sess.run(None, feed)
        n += 1
    n = max(n, 1)
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.thread_time()
        for _ in range(n):
            sess.run(None, feed)
        wall.append((time.perf_counter() - t) / n)
        cpu.append((time.thread_time() - c) / n)
    return Timing(float(np.median(wall)), float(np.min(wall)), float(np.median(cpu)))


def latency_us(sess, window: np.ndarray, batch: int, *, min_time: float = 0.1,
               repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean wall time per call (microseconds) at ``batch``."""
    x = np.repeat(window[None], batch, axis=0)
    return timing(sess, x, min_time=min_time, repeats=repeats).wall_median * 1e6


def cpu_latency_us(sess, window: np.ndarray, *, calls: int = 50, repeats: int = 5) -> float:
    """Thread CPU time per batch-1 call (microseconds), the best of ``repeats`` blocks.

    Decisions taken on it (the selection's latency budget) stay reproducible on a loaded
    machine.
    """
    feed = {contract.INPUT_NAME: np.ascontiguousarray(window[None], np.float32)}
    for _ in range(10):
        sess.run(None, feed)
    best = float("inf")
    for _ in range(repeats):
        t = time.thread_time_ns()
        for _ in range(calls):
            sess.run(None, feed)
        best = min(best, (time.thread_time_ns() - t) / calls / 1000)
    return best


# Batch-1 thread CPU time (us) of the reference graph (:func:`reference`) on an idle core of
# the project's benchmark machine: 2 cores x86-64 (AMD EPYC, AVX2), onnxruntime 1.27, one
# intra-op thread, measured 2026-11-25 (BENCHMARKS.md, "Pipeline").
REFERENCE_US = 17.3


@functools.lru_cache(maxsize=1)
def reference():
    """The reference graph's session and a window for it: statistics and spectra of 6
    channels of 100 samples, logistic regression, float (the first default candidate)."""
    import warnings

    from edge.tools import synthetic
    from trainer.export import build_model
    from trainer.features.registry import DEFAULT_CANDIDATES
    from trainer.pipeline import Pipeline

    X, y = synthetic.make_windows(n_per_class=10, window=100, channels=6, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: the weights do not change the time
        pipe = Pipeline(DEFAULT_CANDIDATES[0], random_state=0,
                        network_params={"max_epochs": 1}).fit(X, y)
    model = build_model(pipe, channels=[f"c{i}" for i in range(6)], window=100, hop=100,
                        name="reference", version="0")
    return session(model), X[0]


def reference_latency_us(sess, window: np.ndarray, *, pairs: int = 7,
                         calls: int = 30) -> float:
    """Batch-1 latency of ``sess`` in reference microseconds (see the module docstring).

    ``pairs`` blocks of ``calls`` calls of ``sess`` alternate with blocks of the reference
    graph; the median ratio of their thread CPU times, times :data:`REFERENCE_US`.
    """
    ref, ref_window = reference()
    feeds = [(s, {contract.INPUT_NAME: np.ascontiguousarray(w[None], np.float32)})
             for s, w in ((sess, window), (ref, ref_window))]
    for s, feed in feeds:
        for _ in range(10):
            s.run(None, feed)
    ratios = []
    for i in range(pairs):
        block = {}
        for s, feed in feeds[::-1] if i % 2 else feeds:  # alternate which goes first
            t = time.thread_time_ns()
            for _ in range(calls):
                s.run(None, feed)
            block[id(s)] = time.thread_time_ns() - t
        ratios.append(block[id(sess)] / max(block[id(ref)], 1))
    return float(np.median(ratios)) * REFERENCE_US


def batch_independent(sess, X: np.ndarray, n: int = 16) -> bool:
    """True if each of the first ``n`` windows gives bit-identical output alone and in a batch."""
    X = X[:n]
    together = sess.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: X})[0]
    alone = np.concatenate([sess.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: X[i:i + 1]})[0]
                            for i in range(len(X))])
    return bool(np.array_equal(together, alone))
