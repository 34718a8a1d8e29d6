"""Run the edge daemon in tests: in-process (fast) or as a real ``sigmoid-edge run`` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from edge.config import load_config
from tests.mqtt_helpers import Broker, Collector

ROOT = Path(__file__).resolve().parent.parent


def config(broker: Broker, model: Path, **values):
    """A validated config for ``broker`` and ``model`` (node ``testnode``), no environment."""
    cli = {"model": str(model), "broker": broker.url, "node": "testnode", **values}
    return load_config(cli=cli, env={})


@contextmanager
def running(broker: Broker, model: Path, **values):
    """An in-process :class:`edge.daemon.Daemon`, connected and subscribed, stopped after."""
    from edge.daemon import Daemon

    daemon = Daemon(config(broker, model, **values))
    daemon.start()
    assert daemon.link.subscribed.wait(5), "daemon did not subscribe"
    try:
        yield daemon
    finally:
        daemon.stop()


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def classifications(collector: Collector, n: int, timeout: float = 10.0) -> list[dict]:
    return [json.loads(m.payload) for m in collector.take(n, timeout)]


class DaemonProcess:
    """``python -m edge run ...`` as a child process, with its stderr captured to a file."""

    def __init__(self, broker: Broker, model: Path, workdir: Path, *args: str,
                 env: dict | None = None, node: str = "testnode"):
        self.log_path = Path(workdir) / f"daemon-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "edge", "run", "--model", str(model),
               "--broker", broker.url, "--node", node, *args]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIGMOID_EDGE_")}
        full_env["PYTHONPATH"] = str(ROOT)
        full_env.update(env or {})
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=full_env, cwd=ROOT)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._log.close()

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
