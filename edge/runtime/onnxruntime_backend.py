"""The onnxruntime backend: a CPU ``InferenceSession`` set up the way the edge runs models."""

from __future__ import annotations


def available() -> bool:
    """True if onnxruntime imports (it has no wheel for 32-bit ARM, for one)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def open_session(model, threads: int = 1):
    """An onnxruntime CPU session for ``model`` (bytes or a path).

    Parameters
    ----------
    model : bytes or str
        The serialized model, or a path.
    threads : int
        Intra-op threads (1 suits a Pi running other services).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Weight-only int8 models (DequantizeLinear -> MatMul) run as onnxruntime's MatMulNBits,
    # which quantizes the activations to int8 row by row: bit-identical alone or in a batch.
    # Its float mode ("session.qdq_matmulnbits_accuracy_level" 0) halves the error against
    # the float model but is not (measured), and the daemon batches across devices.
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
