"""``sigmoid-edge record``: write the sensor messages that arrive on MQTT into CSV logs.

The files are CSV sensor logs (:mod:`edge.tools.sensorfiles`): ``ts,device,label,<channels>``,
exactly what ``sigmoid-train fit`` reads. Payloads are parsed by the daemon's own parser
(:mod:`edge.payload`), so a recording holds what the daemon would have seen; a message it
would reject is counted and skipped.

- **Device**: the topic level where the filter has ``{device}`` (``sensors/{device}/#``) or,
  for a plain filter, its first wildcard (``sensors/#`` reads ``dev1`` from
  ``sensors/dev1/data``).
- **Payloads** (``payload``): JSON (and binary sample blocks by their magic), ``binary``,
  ``cbor`` or ``sparkplug``, read by the daemon's own decoders (:mod:`edge.formats`,
  :mod:`edge.sparkplug`). With ``sparkplug`` the topic is the daemon's Sparkplug input
  template (default ``spBv1.0/{group}/DDATA/{edge_node}/{device}``) and births, aliases and
  metric timestamps are read as the daemon reads them.
- **Channels**: ``channels`` if given; otherwise the numeric keys of the first JSON or CBOR
  object (without ``ts``), ``c0, c1, ...`` for arrays and binary blocks, or the numeric
  metrics of the first Sparkplug birth or data message.
- **Time**: the payload's ``ts``; a sample without one gets its arrival time. A batch with
  one ``ts`` for its first sample is spread evenly up to the next batch of its device (or
  at ``rate_hz`` when given).
- **Label**: a fixed ``label``, or the latest label a device announced on ``label_topic``
  (JSON ``{"label": ..., "ts": ...}`` as ``sigmoid-edge simulate`` sends, or the label as
  plain text) that starts at or before the sample's ``ts``. Samples are labelled when
  their rows are written (every ``flush_seconds``), so a label that arrives a little after
  the first samples it covers still applies.

Safety: the network thread only queues messages; rows are written in whole lines and
flushed to the operating system every ``flush_seconds`` and fsynced at least every
``sync_seconds`` and on close. Ctrl-C and SIGTERM finish the rows already received and
close the file, so it always ends with a complete line. Re-running with the same ``--out``
appends (after cutting an incomplete last line a crash may have left). When a file grows past
``max_bytes``, recording goes on in ``NAME.1.csv``, ``NAME.2.csv``, ... each with its header.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge import formats, topics
from edge.config import check_device_name
from edge.payload import PayloadParser, Rejected
from edge.payload_binary import block_channels
from edge.sparkplug import DEFAULT_TOPIC as SPARKPLUG_TOPIC
from edge.tools.sensorfiles import RESERVED_COLUMNS, CsvWriter

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
QUEUE_SIZE = 100_000
WRITE_CHUNK = 256  # rows


@dataclass
class RecordStats:
    """What a recording wrote and skipped."""

    messages: int = 0
    rows: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    files: list[str] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)


class LabelBook:
    """Per device, the labels announced over time; look a sample's label up by its time."""

    def __init__(self):
        self._times: dict[str, list[float]] = {}
        self._labels: dict[str, list[str]] = {}

    def add(self, device: str, ts: float, label: str | None) -> None:
        times = self._times.setdefault(device, [])
        labels = self._labels.setdefault(device, [])
        value = label or ""
        if times and ts <= times[-1]:
            # A repeat of the current label (simulate re-sends it) or one out of order.
            k = int(np.searchsorted(times, ts, side="right"))
            if k and times[k - 1] == ts:
                labels[k - 1] = value
                return
            times.insert(k, ts)
            labels.insert(k, value)
            return
        if labels and labels[-1] == value:
            return
        times.append(ts)
        labels.append(value)

    def lookup(self, device: str, ts: np.ndarray) -> list[str]:
        times = self._times.get(device)
        if not times:
            return [""] * len(ts)
        # A small tolerance: a label and its first sample carry the same float time.
        k = np.searchsorted(np.asarray(times), ts + 1e-6, side="right") - 1
        labels = self._labels[device]
        return [labels[i] if i >= 0 else "" for i in k.tolist()]


class Recorder:
    """Subscribe, parse and write; see the module docstring for the rules.

    Parameters
    ----------
    client : paho.mqtt.client.Client
        A client, connected or not; the recorder sets its callbacks and subscribes on
        every connect.
    out : path-like
        First CSV file; rotated files go next to it.
    topic : str
        Filter or template of sensor topics.
    label : str, optional
        A fixed label for every row.
    label_topic : str, optional
        Filter or template of label topics.
    channels : sequence of str, optional
        Channel names (and order); learned from the first message otherwise.
    qos : int
        Subscription QoS.
    max_bytes : int
        Size at which a file is closed and the next one started.
    flush_seconds, sync_seconds : float
        How often rows are written and fsynced.
    rate_hz : float, optional
        Sample rate for batches that carry one ``ts``.
    payload : {"json", "binary", "cbor", "sparkplug"}
        The payload format, as the daemon's ``--payload``.
    """

    def __init__(self, client, out, *, topic: str | None = None, label: str | None = None,
                 label_topic: str | None = None, channels: Sequence[str] | None = None,
                 qos: int = 1, max_bytes: int = DEFAULT_MAX_BYTES, flush_seconds: float = 0.5,
                 sync_seconds: float = 5.0, rate_hz: float | None = None,
                 payload: str = "json"):
        if payload not in formats.FORMATS:
            raise ValueError(f"payload must be one of {formats.FORMATS}, got {payload!r}")
        formats.check_available(payload)
        self.payload = payload
        if topic is None:
            topic = SPARKPLUG_TOPIC if payload == "sparkplug" else "sensors/#"
        if label is not None and label_topic is not None:
            raise ValueError("give either --label or --label-topic, not both")
        if label is not None and ("\n" in label or "\r" in label):
            raise ValueError(f"--label must be one line, got {label!r}")
        out = Path(out)
        if out.suffix.lower() != ".csv":
            raise ValueError(f"--out must be a .csv file, got {str(out)!r}")
        if not out.parent.is_dir():
            raise ValueError(f"--out: directory {str(out.parent)!r} does not exist")
        if max_bytes < 1024:
            raise ValueError(f"max size must be at least 1 KiB, got {max_bytes} bytes")
        self.client = client
        self.out = out
        self.topic = topic
        self.filter, self.device_level = topics.to_filter(topic)
        if payload == "sparkplug":
            from edge.sparkplug import parse_template

            self.filter = parse_template(topic)[0]  # births and deaths too
        self.label = label
        self.label_filter = None
        if label_topic is not None:
            self.label_filter, self.label_level = topics.to_filter(label_topic)
        self.channels = tuple(channels) if channels else None
        if self.channels:
            bad = [c for c in self.channels if c in RESERVED_COLUMNS]
            if bad:
                raise ValueError(f"channel names {bad} are reserved for CSV columns")
        self.parser = self._make_parser() if self.channels else None
        self.qos = qos
        self.max_bytes = max_bytes
        self.flush_seconds = flush_seconds
        self.sync_seconds = sync_seconds
        self.rate_hz = rate_hz
        self.labels = LabelBook()
        self.stats = RecordStats()
        self._queue: queue.Queue = queue.Queue(QUEUE_SIZE)
        self._pending: dict[str, tuple[float, np.ndarray, float]] = {}
        self._period: dict[str, float] = {}
        self._rows: list[tuple[str, np.ndarray, np.ndarray]] = []  # (device, ts, values)
        self._writer: CsvWriter | None = None
        self._index = 0
        self.subscribed = threading.Event()
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe

    # -- network thread: only queue -------------------------------------------------

    def subscribe(self) -> None:
        """Subscribe to the sensor (and label) topics; done again on every reconnect."""
        topics = [(self.filter, self.qos)]
        if self.label_filter:
            topics.append((self.label_filter, 1))
        self.client.subscribe(topics)

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if not reason_code.is_failure:
            self.subscribe()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None):
        log.info("subscribed to %s", " and ".join(
            f for f in (self.filter, self.label_filter) if f))
        self.subscribed.set()

    def _on_message(self, client, userdata, msg):
        try:
            self._queue.put_nowait((msg.topic, msg.payload, time.time()))
        except queue.Full:
            self.stats.dropped += 1

    # -- main thread: parse and write -----------------------------------------------

    def run(self, stop: threading.Event, duration: float | None = None) -> RecordStats:
        """Record until ``stop`` is set or ``duration`` seconds pass; always closes cleanly."""
        start = time.monotonic()
        next_flush = start + self.flush_seconds
        next_sync = start + self.sync_seconds
        try:
            while not stop.is_set():
                if duration is not None and time.monotonic() - start >= duration:
                    break
                try:
                    item = self._queue.get(timeout=0.05)
                except queue.Empty:
                    item = None
                if item is not None:
                    self._handle(*item)
                    self._drain(200)
                now = time.monotonic()
                if now >= next_flush:
                    self._flush(sync=now >= next_sync)
                    next_flush = now + self.flush_seconds
                    if now >= next_sync:
                        next_sync = now + self.sync_seconds
        finally:
            self.close()
        return self.stats

    def _drain(self, limit: int) -> None:
        for _ in range(limit):
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            self._handle(*item)

    def close(self) -> None:
        """Write everything received, fsync and close the file (idempotent)."""
        self._drain(10 ** 9)
        for device in list(self._pending):
            self._release_pending(device, None)
        self._flush(sync=True)
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _device(self, topic: str, level: int) -> str | None:
        levels = topic.split("/")
        return levels[level] if level < len(levels) else None

    def _handle(self, topic: str, payload: bytes, arrived: float) -> None:
        if self.label_filter and topics.matches(self.label_filter, topic):
            self._handle_label(topic, payload, arrived)
            return
        self.stats.messages += 1
        if self.payload == "sparkplug":
            self._handle_sparkplug(topic, payload, arrived)
            return
        device = self._device(topic, self.device_level)
        if not device or not check_device_name(device):
            # The daemon would refuse it too: a recording holds only what it would use.
            self._reject("bad_device", f"no usable device name in topic {topic!r:.80}")
            return
        if self.parser is None:
            self._learn_channels(payload)
            if self.parser is None:
                return
        try:
            values, ts = self.parser.parse(payload)
        except Rejected as exc:
            self._reject(exc.reason, exc.detail)
            return
        self._samples(device, values, ts, arrived)

    def _handle_sparkplug(self, topic: str, payload: bytes, arrived: float) -> None:
        if self.parser is None:
            self._learn_sparkplug_channels(topic, payload)
            if self.parser is None:
                return
        try:
            events = self.parser.handle(topic, payload)
        except Rejected as exc:
            self._reject(exc.reason, exc.detail)
            return
        for device, values, ts in events:
            if values is None:
                continue  # a rebirth or gap restarts windows; a recording just goes on
            if not check_device_name(device):
                self._reject("bad_device", f"no usable device name in topic {topic!r:.80}")
                continue
            self._samples(device, values, ts, arrived)

    def _samples(self, device: str, values, ts, arrived: float) -> None:
        values = np.asarray(values, dtype=np.float32).reshape(-1, len(self.channels))
        n = len(values)
        if ts is None:
            times = np.full(n, arrived) if n == 1 else None
            if times is None:
                times = arrived + np.arange(n) * (1.0 / self.rate_hz if self.rate_hz else 0.0)
        elif np.ndim(ts) == 1:
            times = np.asarray(ts, dtype=np.float64)
        elif n == 1:
            times = np.array([ts], dtype=np.float64)
        else:
            self._batch_with_first_ts(device, float(ts), values)
            return
        self._add_rows(device, times, values)

    def _batch_with_first_ts(self, device: str, ts0: float, values: np.ndarray) -> None:
        if self.rate_hz:
            self._add_rows(device, ts0 + np.arange(len(values)) / self.rate_hz, values)
            return
        self._release_pending(device, ts0)
        self._pending[device] = (ts0, values, 0.0)

    def _release_pending(self, device: str, next_ts: float | None) -> None:
        """Write a held-back batch once the next batch tells how far its samples reach."""
        held = self._pending.pop(device, None)
        if held is None:
            return
        ts0, values, _ = held
        n = len(values)
        if next_ts is not None and next_ts > ts0:
            self._period[device] = (next_ts - ts0) / n
        period = self._period.get(device, 0.0)
        self._add_rows(device, ts0 + np.arange(n) * period, values)

    def _add_rows(self, device: str, times: np.ndarray, values: np.ndarray) -> None:
        self._rows.append((device, times, values))
        self.stats.devices.add(device)

    def _make_parser(self):
        if self.payload == "sparkplug":
            from edge.sparkplug import SparkplugDecoder

            return SparkplugDecoder(self.channels, self.topic)
        return formats.Decoder(self.payload, PayloadParser(self.channels))

    def _learn_sparkplug_channels(self, topic: str, payload: bytes) -> None:
        from edge.sparkplug import numeric_metric_names

        try:
            names = numeric_metric_names(payload)
        except ValueError as exc:
            self._reject("invalid_sparkplug", str(exc))
            return
        names = [n for n in names if n not in RESERVED_COLUMNS]
        if not names:
            # Deaths, commands and alias-only data tell no channel names: wait for a birth.
            return
        self._use_channels(names)
        self.parser.handle(topic, payload)  # a birth: its aliases count from here on

    def _use_channels(self, names) -> None:
        self.channels = tuple(names)
        self.parser = self._make_parser()
        log.info("recording channels %s (from the first message)", ", ".join(names))

    def _learn_channels(self, payload: bytes) -> None:
        width = block_channels(payload)
        if width:
            self._use_channels([f"c{k}" for k in range(width)])
            return
        if self.payload == "binary":
            self._reject("bad_block", "not a binary sample block (and no channels known yet)")
            return
        try:
            if self.payload == "cbor":
                import cbor2

                doc = cbor2.loads(payload)
            else:
                doc = json.loads(payload)
        except Exception:
            self._reject(f"invalid_{self.payload}",
                         f"payload is not {self.payload} (and no channels known yet)")
            return
        if isinstance(doc, dict) and "samples" in doc:
            doc = doc["samples"][0] if isinstance(doc["samples"], list) and doc["samples"] \
                else None
        elif isinstance(doc, list) and doc and isinstance(doc[0], (list, dict)):
            doc = doc[0]
        if isinstance(doc, dict):
            names = [k for k, v in doc.items() if k not in RESERVED_COLUMNS
                     and type(v) in (int, float)]
        elif isinstance(doc, list):
            names = [f"c{k}" for k in range(len(doc))]
        elif type(doc) in (int, float):
            names = ["value"]
        else:
            names = []
        if not names:
            self._reject("bad_type", "cannot tell the channels from the first message; "
                                     "pass --channels")
            return
        self._use_channels(names)

    def _handle_label(self, topic: str, payload: bytes, arrived: float) -> None:
        device = self._device(topic, self.label_level)
        if not device:
            return
        text = payload.decode("utf-8", "replace").strip()
        label, ts = text, arrived
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            label = doc.get("label")
            t = doc.get("ts")
            if type(t) in (int, float) and np.isfinite(t):
                ts = float(t)
        elif isinstance(doc, str):
            label = doc
        if label is not None and not isinstance(label, str):
            label = str(label)
        if label and ("\n" in label or "\r" in label):
            self._reject("bad_label", f"label on {topic!r} spans several lines")
            return
        self.labels.add(device, ts, label)

    def _reject(self, reason: str, detail: str) -> None:
        count = self.stats.rejected.get(reason, 0) + 1
        self.stats.rejected[reason] = count
        if count == 1 or count % 1000 == 0:
            log.warning("skipped a message (%s: %s); %d so far for this reason",
                        reason, detail, count)

    # -- files ------------------------------------------------------------------------

    def _path(self, index: int) -> Path:
        return self.out if index == 0 else self.out.with_name(
            f"{self.out.stem}.{index}{self.out.suffix}")

    def _open(self) -> None:
        while True:
            path = self._path(self._index)
            if path.exists() and path.stat().st_size >= self.max_bytes:
                self._index += 1
                continue
            break
        _cut_incomplete_line(path)
        self._writer = CsvWriter(path, self.channels, device=True,
                                 label=self.label is not None or self.label_filter is not None)
        self.stats.files.append(str(path))
        log.info("recording into %s", path)

    def _sync(self) -> None:
        """fsync the current file: its rows survive a power cut, not just a crash."""
        self._writer.flush()
        fd = os.open(self._writer.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _flush(self, sync: bool = False) -> None:
        if not self._rows:
            if sync and self._writer is not None:
                self._sync()
            return
        rows, self._rows = self._rows, []
        devices, times, values, labels = [], [], [], []
        for device, ts, vals in rows:
            devices += [device] * len(ts)
            times.append(ts)
            values.append(vals)
            if self.label is not None:
                labels += [self.label] * len(ts)
            elif self.label_filter is not None:
                labels += self.labels.lookup(device, ts)
        ts = np.concatenate(times).tolist()
        values = np.concatenate(values)
        # In chunks, so a file ends at most one chunk past max_bytes.
        for i in range(0, len(ts), WRITE_CHUNK):
            j = i + WRITE_CHUNK
            if self._writer is None:
                self._open()
            self._writer.write_many(ts[i:j], values[i:j], devices[i:j],
                                    labels[i:j] if self._writer.has_label else None)
            self._writer.flush()
            self.stats.rows += len(ts[i:j])
            if os.path.getsize(self._writer.path) >= self.max_bytes:
                self._sync()
                self._writer.close()
                self._writer = None
                self._index += 1
        if sync and self._writer is not None:
            self._sync()


def _cut_incomplete_line(path: Path) -> None:
    """Drop a partial last line (a crash mid-write) so appended rows start on their own line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 65536))
        tail = f.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        keep = size - len(tail) + cut + 1 if cut >= 0 else 0
        log.warning("%s ended with an incomplete line (a crash?); cutting it off", path)
        f.truncate(keep)
