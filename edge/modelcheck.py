"""Load and self-test a candidate model in a child process, with a time limit.

A validly signed model can still hang onnxruntime (an ONNX ``Loop`` of 1e12 iterations): in
a thread of the daemon it would hold that thread, and the CPU, for good. :class:`Check`
runs ``python -m edge.modelcheck`` with the model's bytes on stdin; the child loads the
model exactly as the daemon will (:func:`edge.models.load_model`: operator allow-list,
contract, self-test) and prints one JSON line. After ``timeout`` seconds the parent kills it
and refuses the model (:class:`edge.models.ModelTimeout`, ``cause: timeout``); the child
also arms ``SIGALRM`` so it dies on its own should the daemon itself be killed first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

from edge.contract import op_name, parse_op_name
from edge.models import ModelError, ModelTimeout, UnsupportedOps

_ERRORS = {cls.cause: cls for cls in (ModelError, ModelTimeout, UnsupportedOps)}


class Check:
    """One candidate model's check in a child process.

    Parameters
    ----------
    data : bytes
        The model file's bytes.
    label : str
        For messages.
    timeout : float
        Seconds the child may take, start-up (importing onnxruntime) included.
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
        with self._lock:
            if self._killed:
                raise ModelError(f"{self.label}: not checked, the daemon is stopping")
            self._proc = subprocess.Popen(self.args, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            out, _ = self._proc.communicate(self.data, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ModelTimeout(
                f"{self.label}: the self-test did not finish within {self.timeout:g} s "
                "(model_check_timeout); the model may hang onnxruntime") from None
        if self._killed:
            raise ModelError(f"{self.label}: check stopped, the daemon is stopping")
        try:
            result = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise ModelError(f"{self.label}: the model check process failed (exit code "
                             f"{self._proc.returncode}); the model may crash onnxruntime") \
                from None
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


def main(argv: list[str]) -> int:
    threads, alarm, label, *ops = argv
    if hasattr(signal, "alarm"):
        signal.alarm(int(alarm))  # default action: the kernel ends this process
    from edge.models import load_model

    data = sys.stdin.buffer.read()
    try:
        load_model(data, threads=int(threads), origin=label,
                   extra_ops=frozenset(parse_op_name(o) for o in ops))
        result = {"ok": True}
    except ModelError as e:
        result = {"ok": False, "cause": e.cause, "error": str(e)}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip onnxruntime's teardown


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
