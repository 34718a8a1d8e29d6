"""Load a model file, check it against the contract, self-test it, and swap it safely.

:func:`load_model` turns bytes or a path into a :class:`LoadedModel` (onnxruntime session,
decoded metadata, sha256 of the file bytes) or raises :class:`ModelError` saying what is
wrong. :class:`ModelSlot` holds the serving model: :meth:`ModelSlot.swap` validates a new
model completely *before* it replaces the current one, so a bad file never stops the
daemon, and keeps the previous model for :meth:`ModelSlot.rollback`. The worker reads
``slot.current`` once per batch, so a swap always lands between batches.

Signature checks (``--trusted-key``) plug in as *verifiers*: callables
``verifier(data: bytes, signature: bytes | None, origin: str)`` that raise
:class:`ModelError` to refuse a model; :meth:`ModelSlot.swap` runs them all first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.contract import (
    ANOMALY_OUTPUT,
    INPUT_NAME,
    INPUT_RANGE,
    OUTPUT_NAME,
    ContractError,
    ModelInfo,
    anomaly_threshold,
    check_ops,
    check_session,
    input_bounds,
)
from edge.contract import decode_metadata as _decode
from edge.runtime import RuntimeUnavailable, open_session
from edge.runtime import resolve as resolve_runtime

log = logging.getLogger(__name__)

Verifier = Callable[[bytes, "bytes | None", str], None]


class ModelError(ValueError):
    """A model file cannot be used; the message says why and what to do.

    ``cause`` is the short reason reported on the errors topic.
    """

    cause = "invalid_model"


class UnsupportedOps(ModelError):
    """The model uses operators outside :data:`edge.contract.SUPPORTED_OPS`."""

    cause = "unsupported_op"


class ModelTimeout(ModelError):
    """The model's self-test did not finish within the time limit."""

    cause = "timeout"


@dataclass(frozen=True)
class LoadedModel:
    """A validated model ready to serve.

    Attributes
    ----------
    session : onnxruntime.InferenceSession
    info : ModelInfo
        Decoded metadata (labels, channels, window, hop, ...).
    sha256 : str
        Hex digest of the model file's bytes (what outputs report).
    source : str
        Where it came from (a path, or ``"mqtt"`` for a push).
    anomaly_threshold : float or None
        Set when the model has an ``anomaly_score`` output: a score above it is an anomaly.
    runtime : str
        The runtime running it: ``"onnxruntime"`` or ``"numpy"`` (see :mod:`edge.runtime`).
    """

    session: object
    info: ModelInfo
    sha256: str
    source: str
    anomaly_threshold: float | None = None
    runtime: str = "onnxruntime"

    @property
    def identity(self) -> dict[str, str]:
        """``{"name", "version", "sha256"}`` as published with every classification."""
        return {"name": self.info.name, "version": self.info.version, "sha256": self.sha256}

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities ``[B, classes]`` for float32 windows ``[B, window, channels]``."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: windows})[0]

    def predict_scored(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and, when the model has one, the ``anomaly_score`` ``[B]`` (else None)."""
        if self.anomaly_threshold is None:
            return self.predict(windows), None
        probs, scores = self.session.run([OUTPUT_NAME, ANOMALY_OUTPUT], {INPUT_NAME: windows})
        return probs, scores



def read_source(source, origin: str | None, default: str) -> tuple[bytes, str]:
    """The bytes of a model given as bytes or a path, and a label for messages.

    Raises
    ------
    ModelError
        If the file cannot be read.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), origin or default
    try:
        return Path(source).read_bytes(), origin or str(source)
    except OSError as e:
        raise ModelError(f"cannot read model file {source}: {e.strerror}") from None

def load_model(source: bytes | str | os.PathLike, *, threads: int = 1,
               origin: str | None = None, runtime: str = "auto",
               extra_ops: frozenset[tuple[str, str]] = frozenset()) -> LoadedModel:
    """Load, validate and self-test a model.

    Parameters
    ----------
    source : bytes or path
        The model file's bytes, or its path.
    threads : int
        onnxruntime intra-op threads (1 suits a Pi running other services).
    origin : str, optional
        A label for messages; the path by default.
    runtime : {"auto", "onnxruntime", "numpy"}
        Which runtime runs it (:func:`edge.runtime.resolve`).
    extra_ops : set of (domain, op_type)
        Operators allowed beyond :data:`edge.contract.SUPPORTED_OPS` (``allow_ops``).

    Raises
    ------
    ModelError
        If the file cannot be read, is not ONNX, breaks the contract, uses an operator
        that is not allowed (:class:`UnsupportedOps`) or the runtime does not run, or fails
        the self-test.
    """
    data, origin = read_source(source, origin, "model bytes")
    if not data:
        raise ModelError(f"{origin}: the model file is empty")
    try:
        check_ops(data, extra_ops)
    except ContractError as e:
        cls = UnsupportedOps if "operators" in str(e) else ModelError
        raise cls(f"{origin}: {e}") from None
    try:
        runtime = resolve_runtime(runtime)
    except (ValueError, RuntimeUnavailable) as e:
        raise ModelError(str(e)) from None
    try:
        session = open_session(data, threads, runtime)
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        raise ModelError(f"{origin}: not a loadable ONNX model ({runtime} runtime): "
                         f"{str(e).strip()[:400]}") from None
    try:
        info = _decode(dict(session.get_modelmeta().custom_metadata_map))
        check_session(session, info)
    except ContractError as e:
        raise ModelError(f"{origin}: {e}") from None
    outputs = {o.name for o in session.get_outputs()}
    threshold = anomaly_threshold(info) if ANOMALY_OUTPUT in outputs else None
    model = LoadedModel(session, info, hashlib.sha256(data).hexdigest(), origin, threshold,
                        runtime)
    self_test(model)
    return model


def self_test_windows(info: ModelInfo) -> np.ndarray:
    """The windows a model must handle: all zeros and, when the metadata has its
    :data:`~edge.contract.INPUT_RANGE`, constant windows at the training minimum, middle
    and maximum of every channel."""
    shape = (info.window, len(info.channels))
    windows = [np.zeros(shape, np.float32), np.zeros(shape, np.float32)]
    bounds = input_bounds(info, 0.0)
    if bounds is not None:
        low, high = (np.array(b, np.float32) for b in bounds)
        for level in (low, (low + high) / 2, high):
            windows.append(np.broadcast_to(level, shape))
    return np.stack(windows).astype(np.float32)


def self_test(model: LoadedModel) -> None:
    """Run the model on :func:`self_test_windows`; check the outputs are probability vectors
    (and finite anomaly scores).

    Raises
    ------
    ModelError
        If it fails to run, or the output has the wrong shape or is not a distribution.
    """
    info = model.info
    windows = self_test_windows(info)
    try:
        probs, scores = model.predict_scored(windows)
    except Exception as e:
        raise ModelError(f"{model.source}: self-test failed to run: {e}") from None
    if scores is not None and not np.isfinite(scores).all():
        raise ModelError(f"{model.source}: self-test gives non-finite anomaly scores "
                         f"{scores.tolist()} on windows within its {INPUT_RANGE}")
    expected = (len(windows), len(info.labels))
    if probs.shape != expected:
        raise ModelError(
            f"{model.source}: self-test output has shape {list(probs.shape)}, expected "
            f"{list(expected)} (batch x labels)"
        )
    if not np.isfinite(probs).all() or (probs < -1e-3).any() or (
        np.abs(probs.sum(axis=1) - 1.0) > 0.02
    ).any():
        raise ModelError(
            f"{model.source}: self-test output is not a probability vector (rows must be "
            f">= 0 and sum to 1): {probs[0].tolist()}"
        )


class ModelSlot:
    """The serving model, with the previous one kept for rollback.

    Parameters
    ----------
    model : LoadedModel
        The first model.
    threads : int
        onnxruntime threads for models loaded by :meth:`swap`.
    runtime : str
        The runtime for models loaded by :meth:`swap` (``auto``, ``onnxruntime``, ``numpy``).
    verifiers : list of callables, optional
        Each ``verifier(data, signature, origin)`` may raise :class:`ModelError`.
    """

    def __init__(self, model: LoadedModel, *, threads: int = 1, runtime: str = "auto",
                 verifiers: list[Verifier] | None = None,
                 extra_ops: frozenset[tuple[str, str]] = frozenset()):
        self.current = model
        self.previous: LoadedModel | None = None
        self.threads = threads
        self.runtime = runtime
        self.extra_ops = extra_ops
        # Called as precheck(data, label) after the verifiers, before the model is loaded
        # here; raise ModelError to refuse it (e.g. edge.modelcheck: load and self-test in
        # a child process with a time limit, so a model that hangs onnxruntime costs a
        # process, not this thread).
        self.prechecks: list[Callable[[bytes, str], None]] = []
        self.verifiers: list[Verifier] = list(verifiers or [])
        # Called with a loaded, self-tested model before it becomes current; raise
        # ModelError (or ValueError) to refuse it (e.g. the channel mapping does not fit).
        self.checks: list[Callable[[LoadedModel], object]] = []
        # Called with (old, new) after a swap or rollback.
        self.listeners: list[Callable[[LoadedModel, LoadedModel], None]] = []
        self._lock = threading.Lock()  # one swap at a time (SIGHUP and a push may race)

    def swap(self, source: bytes | str | os.PathLike, *, signature: bytes | None = None,
             origin: str | None = None) -> LoadedModel:
        """Validate a new model completely, then make it current.

        Parameters
        ----------
        source : bytes or path
            The new model file's bytes or path.
        signature : bytes, optional
            Passed to the verifiers (e.g. an Ed25519 signature of the bytes).
        origin : str, optional
            Where it came from, for messages (``"SIGHUP"``, ``"mqtt push"``...).

        Returns
        -------
        LoadedModel
            The new current model.

        Raises
        ------
        ModelError
            If a verifier refuses it or it fails :func:`load_model`; the current model
            keeps serving.
        """
        data, label = read_source(source, origin, "pushed model")
        for verify in self.verifiers:
            verify(data, signature, label)
        for precheck in self.prechecks:
            precheck(data, label)
        new = load_model(data, threads=self.threads, origin=label, runtime=self.runtime,
                         extra_ops=self.extra_ops)
        for check in self.checks:
            try:
                check(new)
            except ModelError:
                raise
            except ValueError as e:
                raise ModelError(f"{label}: {e}") from None
        with self._lock:
            old = self.current
            self.previous, self.current = old, new
        log.info("model swapped: %s %s (sha256 %.12s) -> %s %s (sha256 %.12s)",
                 old.info.name, old.info.version, old.sha256,
                 new.info.name, new.info.version, new.sha256)
        for listener in self.listeners:
            listener(old, new)
        return new

    def rollback(self) -> LoadedModel:
        """Make the previous model current again.

        Raises
        ------
        ModelError
            If there is no previous model.
        """
        with self._lock:
            if self.previous is None:
                raise ModelError("no previous model to roll back to")
            old = self.current
            self.current, self.previous = self.previous, old
            new = self.current
        log.warning("model rolled back to %s %s (sha256 %.12s)",
                    new.info.name, new.info.version, new.sha256)
        for listener in self.listeners:
            listener(old, new)
        return new
