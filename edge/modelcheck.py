"""Load and self-test a candidate model in a child process, with a time limit.

A validly signed model can still hang onnxruntime (an ONNX ``Loop`` of 1e12 iterations): in
a thread of the daemon it would hold that thread, and the CPU, for good. :class:`Check`
runs ``python -m edge.modelcheck`` on a temporary copy of the model; the child imports
onnxruntime, says ``ready``, loads the model exactly as the daemon will
(:func:`edge.models.load_model`: operator allow-list, contract, self-test) and prints one
JSON line. If that line does not come within ``timeout`` seconds of ``ready``, the parent
kills the child and refuses the model (:class:`edge.models.ModelTimeout`, ``cause:
timeout``); the child also arms ``SIGALRM`` so it dies on its own should the daemon itself
be killed first.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading

from edge.contract import op_name, parse_op_name
from edge.models import ModelError, ModelTimeout, UnsupportedOps

log = logging.getLogger(__name__)

_ERRORS = {cls.cause: cls for cls in (ModelError, ModelTimeout, UnsupportedOps)}


STARTUP_S = 120.0  # for the child to import onnxruntime (slow on a busy Pi), not the model


class Check:
    """One candidate model's check in a child process.

    Parameters
    ----------
    data : bytes
        The model file's bytes.
    label : str
        For messages.
    timeout : float
        Seconds the child may take to load and self-test the model, counted from when it
        has imported onnxruntime (at most :data:`STARTUP_S` more).
    threads : int
        onnxruntime intra-op threads, as the daemon will use.
    extra_ops : set of (domain, op_type)
        ``allow_ops``.
    """

    def __init__(self, data: bytes, label: str, *, timeout: float, threads: int = 1,
                 extra_ops=frozenset()):
        self.data = data
        self.label = label
        self.timeout = timeout
        self.args = [sys.executable, "-m", "edge.modelcheck", str(threads), str(int(timeout) + 2),
                     label, *(op_name(*op) for op in sorted(extra_ops))]
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._killed = False

    def run(self) -> None:
        """Raise :class:`edge.models.ModelError` (or a subclass) if the model fails."""
        with tempfile.NamedTemporaryFile(prefix="sigmoid-edge-check-", suffix=".onnx") as f:
            f.write(self.data)
            f.flush()
            with self._lock:
                if self._killed:
                    raise ModelError(f"{self.label}: not checked, the daemon is stopping")
                self._proc = subprocess.Popen([*self.args, f.name], stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL,
                                              stdin=subprocess.DEVNULL)
            log.info("checking model %s in a child process (pid %d), at most %g s",
                     self.label, self._proc.pid, self.timeout)
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=_read_lines, args=(self._proc.stdout, lines),
                             name="sigmoid-edge-modelcheck", daemon=True).start()
            try:
                ready = lines.get(timeout=STARTUP_S)
                result = lines.get(timeout=self.timeout) if ready == "ready" else None
            except queue.Empty:
                self.kill()
                raise ModelTimeout(
                    f"{self.label}: the self-test did not finish within {self.timeout:g} s "
                    "(model_check_timeout); the model may hang onnxruntime") from None
            finally:
                if self._proc.poll() is None and self._killed:
                    self._proc.wait()
        if self._killed:
            raise ModelError(f"{self.label}: check stopped, the daemon is stopping")
        try:
            result = json.loads(result)
        except (TypeError, ValueError):
            self.kill()
            raise ModelError(f"{self.label}: the model check process failed (exit code "
                             f"{self._proc.poll()}); the model may crash onnxruntime") \
                from None
        self._proc.wait()
        if not result.get("ok"):
            raise _ERRORS.get(result.get("cause"), ModelError)(result.get("error", "?"))

    def kill(self) -> None:
        """Stop the child now (the daemon is stopping, or the time is up)."""
        with self._lock:
            self._killed = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.decode("utf-8", "replace").strip())
    lines.put(None)


def main(argv: list[str]) -> int:
    threads, alarm, label, *ops, path = argv
    from edge.models import load_model

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    if hasattr(signal, "alarm"):
        signal.alarm(int(alarm))  # default action: the kernel ends this process
    try:
        load_model(path, threads=int(threads), origin=label,
                   extra_ops=frozenset(parse_op_name(o) for o in ops))
        result = {"ok": True}
    except ModelError as e:
        result = {"ok": False, "cause": e.cause, "error": str(e)}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip onnxruntime's teardown


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
