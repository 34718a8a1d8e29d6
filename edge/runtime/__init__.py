"""Inference runtimes: onnxruntime where it installs, numpy everywhere else.

Every runtime opens a model file into a *session* with the part of onnxruntime's
``InferenceSession`` interface the edge uses:

- ``run(output_names, {input_name: array}) -> list of arrays`` (``None``: all outputs);
- ``get_inputs()`` / ``get_outputs()``: objects with ``name``, ``type`` and ``shape``;
- ``get_modelmeta().custom_metadata_map``: the model's ``metadata_props``.

``auto`` picks onnxruntime when it imports and the numpy runtime otherwise (32-bit Raspberry
Pi OS, the Pi Zero and Pi 1, where onnxruntime has no wheel).
"""

from __future__ import annotations

from edge.runtime import onnxruntime_backend

RUNTIMES = ("auto", "onnxruntime", "numpy")


class RuntimeUnavailable(RuntimeError):
    """The runtime asked for is not installed here."""


def resolve(runtime: str = "auto") -> str:
    """The concrete runtime (``"onnxruntime"`` or ``"numpy"``) that ``runtime`` means here.

    Raises
    ------
    ValueError
        If ``runtime`` is not one of :data:`RUNTIMES`.
    RuntimeUnavailable
        If ``runtime`` is ``"onnxruntime"`` and onnxruntime does not import.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "auto":
        return "onnxruntime" if onnxruntime_backend.available() else "numpy"
    if runtime == "onnxruntime" and not onnxruntime_backend.available():
        raise RuntimeUnavailable(
            "onnxruntime is not installed (it has no wheel for this machine, e.g. 32-bit ARM); "
            "use --runtime numpy (or auto)")
    return runtime


def open_session(model, threads: int = 1, runtime: str = "auto"):
    """Open ``model`` (bytes or a path) with ``runtime``; see the module docstring.

    Parameters
    ----------
    model : bytes or str
    threads : int
        onnxruntime intra-op threads (the numpy runtime uses numpy's own).
    runtime : {"auto", "onnxruntime", "numpy"}
    """
    if resolve(runtime) == "numpy":
        from edge.runtime.numpy_backend import NumpySession

        return NumpySession(model)
    return onnxruntime_backend.open_session(model, threads)


def runtime_of(session) -> str:
    """``"numpy"`` or ``"onnxruntime"``: which runtime made ``session``."""
    return getattr(session, "runtime", "onnxruntime")
