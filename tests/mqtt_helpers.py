"""A real mosquitto broker for tests, and the real command-line clients.

No mocks: integration tests start :class:`Broker` on a free loopback port with its own
config in a temp dir, and talk to it with paho and with ``mosquitto_pub``/``mosquitto_sub``.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def require(program: str) -> str:
    # Debian puts the broker in /usr/sbin, which is not on a normal user's PATH.
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/local/sbin")
    if path is None:
        raise RuntimeError(
            f"{program} is not installed; run: sudo apt-get install -y mosquitto mosquitto-clients"
        )
    return path


class Broker:
    """A mosquitto process on ``127.0.0.1:port`` with a config written to ``workdir``.

    Parameters
    ----------
    workdir : Path
        Where the config, log and persistence file go.
    port : int, optional
        Fixed port (a free one when omitted); kept across :meth:`restart`.
    config : str
        Extra lines for the listener (auth, TLS, ACL...). Anonymous access is allowed
        unless the extra lines say otherwise.
    persistence : bool
        Keep sessions and retained messages on disk across restarts.
    tls : bool
        The extra lines make the listener TLS (see ``tests/tls_helpers.py``): only changes
        :attr:`url` to ``mqtts://``.
    standalone : bool
        ``config`` is the whole mosquitto.conf (e.g. a production file with its ports and
        paths rewritten) and is written as it is; its listener must use ``port``.
    """

    def __init__(self, workdir: Path, port: int | None = None, config: str = "",
                 persistence: bool = False, tls: bool = False, standalone: bool = False):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = HOST
        self.extra = config
        self.persistence = persistence
        self.tls = tls
        self.standalone = standalone
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def _write_config(self) -> None:
        if self.standalone:
            self.conf_path.write_text(self.extra + "\n")
            return
        lines = [
            f"listener {self.port} {self.host}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to the "mosquitto" user, which cannot read
            # password, ACL, key or persistence files in a root-owned 0700 temp dir.
            lines.append("user root")
        if "allow_anonymous" not in self.extra:
            lines.append("allow_anonymous true")
        self.conf_path.write_text("\n".join(lines) + "\n" + self.extra + "\n")

    def start(self, timeout: float = 10.0) -> Broker:
        """Start mosquitto and wait until it accepts connections."""
        self._write_config()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [require("mosquitto"), "-c", str(self.conf_path)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start:\n{self.log_path.read_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        """Stop mosquitto (SIGTERM, then SIGKILL after 5 s)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Kill mosquitto abruptly, as a crash or a power cut would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> Broker:
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def mosquitto_pub(broker: Broker, topic: str, message: str | bytes | None = None, *,
                  qos: int = 0, retain: bool = False, lines: bool = False,
                  extra: tuple[str, ...] = (), timeout: float = 10.0) -> None:
    """Publish with the real ``mosquitto_pub`` client.

    With ``lines=True``, ``message`` is sent on stdin and each line is one message (``-l``).
    """
    cmd = [require("mosquitto_pub"), "-h", broker.host, "-p", str(broker.port),
           "-t", topic, "-q", str(qos), *extra]
    if retain:
        cmd.append("-r")
    data = message.encode() if isinstance(message, str) else message
    if lines:
        cmd.append("-l")
        subprocess.run(cmd, input=data, check=True, timeout=timeout, capture_output=True)
    else:
        cmd += ["-m", data.decode()] if data is not None else ["-n"]
        subprocess.run(cmd, check=True, timeout=timeout, capture_output=True)


def mosquitto_sub(broker: Broker, topic: str, count: int, *, timeout: float = 10.0,
                  qos: int = 0, extra: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Collect ``count`` messages with the real ``mosquitto_sub``; returns (topic, payload) pairs.

    Raises
    ------
    AssertionError
        If fewer than ``count`` messages arrive within ``timeout`` seconds.
    """
    cmd = [require("mosquitto_sub"), "-h", broker.host, "-p", str(broker.port), "-t", topic,
           "-q", str(qos), "-C", str(count), "-W", str(max(1, int(timeout))), "-v", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 5)
    pairs = [tuple(line.split(" ", 1)) for line in proc.stdout.splitlines() if line]
    pairs = [(p[0], p[1] if len(p) > 1 else "") for p in pairs]
    if len(pairs) < count:
        raise AssertionError(f"mosquitto_sub got {len(pairs)} of {count} messages on {topic!r}: "
                             f"{pairs!r} {proc.stderr}")
    return pairs


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int


class Collector:
    """A paho subscriber that collects messages into a queue (for assertions).

    Use as a context manager; :meth:`get` waits for the next message. For a TLS broker
    with passwords pass ``username``, ``password`` and ``tls_ca`` (and ``tls_cert`` /
    ``tls_key`` for a client certificate); a refused connection raises ``ConnectionError``.
    """

    def __init__(self, broker: Broker, *topics: str, qos: int = 1,
                 username: str | None = None, password: str | None = None,
                 tls_ca: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None):
        self.messages: queue.Queue[Message] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self._subscribed = queue.Queue()
        self._connected: queue.Queue = queue.Queue()
        self.client.on_message = lambda c, u, m: self.messages.put(
            Message(m.topic, m.payload, bool(m.retain), m.qos))
        self.client.on_subscribe = lambda *a: self._subscribed.put(True)
        self.client.on_connect = lambda c, u, f, rc, p: self._connected.put(rc)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_ca or tls_cert:
            self.client.tls_set(ca_certs=tls_ca, certfile=tls_cert, keyfile=tls_key)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        rc = self._connected.get(timeout=10)
        if rc.is_failure:
            self.close()
            raise ConnectionError(f"broker refused the Collector: {rc}")
        for t in topics:
            self.client.subscribe(t, qos)
            self._subscribed.get(timeout=10)

    def get(self, timeout: float = 10.0) -> Message:
        return self.messages.get(timeout=timeout)

    def take(self, n: int, timeout: float = 10.0) -> list[Message]:
        """The next ``n`` messages; fails if they do not all arrive within ``timeout``."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(out)} of {n} messages: {out!r}")
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                continue
        return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
