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
    # x86-64 without VNNI multiplies uint8 activations by int8 weights with an instruction
    # that saturates pairs of products at int16 (pmaddubsw): a QOperator int8 layer can come
    # out dozens of steps off (measured: 144 exact, 127 saturated, probabilities 0.7 apart).
    # This option takes the exact path. ARM (every Pi) and the numpy runtime compute exactly
    # already, so with it the trainer measures on x86 what a Pi computes.
    options.add_session_config_entry("session.x64quantprecision", "1")
    # Weight-only int8 models (DequantizeLinear -> MatMul) run as onnxruntime's MatMulNBits
    # (accuracy_level 4), which quantizes the activations to int8 per row in blocks of 32:
    # bit-identical alone or in a batch, and what the numpy runtime computes too
    # (edge/runtime/numpy_matmul_nbits.py). Not on a Pi 4 (Cortex-A72, no dot-product
    # instructions): there it multiplies in float (measured under qemu; a Pi 5 rounds).
    # The float mode ("session.qdq_matmulnbits_accuracy_level" 0) halves the error against
    # the float model but is not batch-independent (measured), and the daemon batches
    # across devices.
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
