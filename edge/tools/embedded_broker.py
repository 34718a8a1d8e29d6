"""An MQTT broker inside this process, for ``sigmoid-edge demo`` on a machine without one.

It runs amqtt (a maintained pure-Python broker, the ``demo`` extra) on its own asyncio loop
in a daemon thread, listening on loopback only, anonymous access allowed.

Limits, measured with paho-mqtt 2 clients on a 2-core x86_64 machine: MQTT 3.1.1 only (an
MQTT 5 client is refused with "Unsupported protocol version", so clients must connect with
3.1.1), and about 2,000 msg/s at QoS 0 and 1,300 msg/s at QoS 1 through the broker. Plenty
for the demo; use mosquitto for anything real.
"""

from __future__ import annotations

import asyncio
import logging
import threading

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """amqtt on ``host:port`` in a background thread.

    Parameters
    ----------
    host : str
        Address to listen on (loopback by default: the demo needs nothing else).
    port : int
        Port; 0 picks a free one (read it back from :attr:`port` after :meth:`start`).

    Examples
    --------
    >>> with EmbeddedBroker() as broker:  # doctest: +SKIP
    ...     print(broker.url)
    mqtt://127.0.0.1:40123
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        """Start listening; returns once clients can connect.

        Raises
        ------
        RuntimeError
            If amqtt is not installed (with the command that installs it) or the broker
            could not start (e.g. the port is taken).
        """
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise RuntimeError(
                "the embedded MQTT broker needs amqtt: pip install 'sigmoid-edge[demo]' "
                "(or pass --broker mqtt://HOST:PORT to use a broker you run)"
            ) from None
        # amqtt logs every connection at INFO; the demo only wants its problems.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            # Without an auth plugin amqtt refuses every client.
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

        async def begin():
            self._broker = Broker(config, loop=self._loop)
            await self._broker.start()
            server = self._broker._servers["default"].instance
            self.port = server.sockets[0].getsockname()[1]

        def run():
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(begin())
            except BaseException as exc:  # report any failure to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="embedded-mqtt-broker", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"the embedded MQTT broker did not start within {timeout} s")
        if failure:
            raise RuntimeError(f"the embedded MQTT broker could not start on "
                               f"{self.host}:{self.port}: {failure[0]}") from failure[0]
        log.debug("embedded MQTT broker (amqtt, MQTT 3.1.1) listening on %s", self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect every client and stop the broker thread."""
        if self._loop is None or self._broker is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            future.result(timeout)
        except Exception as exc:  # a slow or failed shutdown must not hang the demo
            log.warning("embedded broker shutdown: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._loop = None
        self._broker = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
