"""``sigmoid-train collect``: store every capture the daemons publish in a capture directory.

The collector holds a persistent MQTT session (a client id derived from the output
directory, clean start off, QoS 1), so the broker keeps the captures published while it
is stopped or while the broker restarts (with mosquitto's ``persistence true``). A capture
is acknowledged only after its file and index line are on disk, so a stop at any moment
loses nothing; a redelivery has the same capture id and is counted as a duplicate instead
of being stored twice (:mod:`trainer.captures`).

The network thread only enqueues; a writer thread parses, stores and acknowledges.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from edge import topics
from edge.mqtt import Backoff, MqttLink, build_client
from trainer.captures import CaptureError, CaptureStore, parse_capture

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600


@dataclass
class CollectStats:
    """What a collector did: stored, duplicates (redeliveries) and rejected messages."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0


def default_client_id(out) -> str:
    """One persistent session per output directory: restarting ``collect`` resumes it."""
    digest = hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:12]
    return f"sigmoid-train-collect-{digest}"


def filters(nodes=None) -> list[str]:
    """Subscription filters: every node's captures, or only those of ``nodes``."""
    if not nodes:
        return [topics.to_filter(topics.CAPTURE)[0]]
    return [topics.to_filter(topics.node_topic(topics.CAPTURE, n))[0] for n in nodes]


class Collector:
    """Subscribe to capture topics and store each capture once in ``store``.

    Parameters
    ----------
    store : CaptureStore
    broker : str
        ``mqtt://`` or ``mqtts://`` URL.
    nodes : list of str, optional
        Only these daemons' captures (default: every node's).
    client_id : str, optional
        The persistent session's id (default: :func:`default_client_id` of the store).
    mqtt_version : {"5", "3.1.1"}
    username, password, tls_ca, tls_cert, tls_key :
        As for :func:`edge.mqtt.build_client`.
    """

    def __init__(self, store: CaptureStore, broker: str, *, nodes=None, client_id: str = "",
                 mqtt_version: str = "5", **auth):
        self.store = store
        self.stats = CollectStats()
        client, address = build_client(
            broker, client_id=client_id or default_client_id(store.root),
            mqtt_version=mqtt_version, persistent=True, manual_ack=True, **auth)
        self.link = MqttLink(client, address, backoff=Backoff(0.5, 10.0),
                             session_expiry=SESSION_EXPIRY_S)
        self._queue: queue.Queue = queue.Queue()
        self._done = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="collect-writer",
                                        daemon=True)
        self._level = topics.CAPTURE.split("/").index("{node}")
        for f in filters(nodes):
            self.link.subscribe(f, 1, self._on_message, default=True)

    def _on_message(self, msg) -> None:  # network thread: enqueue only
        self._queue.put((msg.topic, msg.payload, msg.mid, msg.qos))

    def _write_loop(self) -> None:
        while not (self._done.is_set() and self._queue.empty()):
            try:
                topic, payload, mid, qos = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.handle(topic, payload)
            except Exception:  # a bad message or a full disk must not stop the collector
                log.exception("could not store a capture from %s", topic)
                self.stats.rejected += 1
            if qos:
                self.link.ack(mid, qos)

    def handle(self, topic: str, payload: bytes) -> bool:
        """Parse and store one capture message; True if it was new."""
        node = topic.split("/")[self._level]
        try:
            doc = parse_capture(node, payload)
        except CaptureError as exc:
            self.stats.rejected += 1
            log.warning("rejected a message on %s: %s", topic, exc)
            return False
        if self.store.add(doc):
            self.stats.stored += 1
            log.info("stored %s from %s/%s (%s, %s %.2f)", doc["capture_id"], node,
                     doc["device"], doc.get("reason"), doc.get("label"),
                     doc.get("confidence") or 0.0)
            return True
        self.stats.duplicates += 1
        log.info("duplicate %s from %s/%s (already stored)", doc["capture_id"], node,
                 doc["device"])
        return False

    def start(self, timeout: float = 10.0) -> None:
        """Start the writer, connect and subscribe (raises :class:`edge.mqtt.MqttError`)."""
        self._writer.start()
        self.link.start(timeout)

    def stop(self) -> None:
        """Store and acknowledge what was received, then disconnect.

        What arrives after the writer stopped stays unacknowledged: the broker sends it again
        next time, and its id makes it a duplicate, not a second copy.
        """
        self._done.set()
        self._writer.join(10)
        self.link.stop()
