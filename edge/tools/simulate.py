"""``sigmoid-edge simulate``: replay sensor data as live MQTT sensor streams, with true labels.

Each simulated device publishes its samples at the sample rate on ``sensors/{device}/data``
(inside the daemon's default input ``sensors/{device}/#``), and the true label of what it is
sending on the side topic ``sim/{device}/label``, which is outside ``sensors/#`` so the
daemon never mistakes it for sensor data.

Label messages are JSON ``{"device": "dev1", "label": "imbalance", "ts": 1732550000.25}``:
"from time ``ts`` on, ``device`` sends ``label``". One is published (QoS 1) whenever a
device starts a new segment, repeated once a second so that late subscribers learn the
current label, and a final one with ``"label": null`` when the device stops.

Sample payloads (``--format``), all with ``ts`` in seconds (wall-clock time) except array:

- ``object``: one sample per message, ``{"ts": 1732550000.25, "x": 0.1, "y": -0.3, "z": 0.02}``;
- ``array``: one sample per message in channel order, ``[0.1, -0.3, 0.02]``;
- ``batch``: every ``batch_seconds``, ``{"samples": [[...], ...], "ts": [t0, t1, ...]}``;
- ``binary``: every ``batch_seconds``, one binary sample block (float32, start time and
  sample period; :mod:`edge.payload_binary`);
- ``cbor``: the ``batch`` document encoded as CBOR (needs ``cbor2``);
- ``sparkplug``: every ``batch_seconds``, a Sparkplug B DDATA on
  ``spBv1.0/sim/DDATA/simulator/{device}`` (the ``--topic`` default becomes that) with one
  named Float metric per channel and sample, each with its timestamp (ms), after an NBIRTH
  and a DBIRTH per device (needs ``protobuf``).

Sources of data: :class:`SyntheticSource` (machine vibration from :mod:`edge.tools.synthetic`,
endless), :class:`TsSource` (a UEA/UCR ``.ts`` file, one case after another per device,
a pause between cases) and :class:`CsvSource` (a CSV sensor log or a recording).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.payload_binary import encode_block
from edge.tools import synthetic

log = logging.getLogger(__name__)

SENSOR_TOPIC = "sensors/{device}/data"
LABEL_TOPIC = "sim/{device}/label"
FORMATS = ("object", "array", "batch", "binary", "cbor", "sparkplug")
BATCHED = ("batch", "binary", "cbor", "sparkplug")
SPARKPLUG_TOPIC = "spBv1.0/sim/DDATA/simulator/{device}"
LABEL_REPEAT_S = 1.0
# Longest wait for the final label messages' acknowledgements when the simulation ends.
FLUSH_TIMEOUT_S = 5.0


@dataclass
class Segment:
    """A stretch of one device's stream with one true label.

    Attributes
    ----------
    label : str or None
        True label of every sample in ``data`` (None when unknown).
    data : ndarray of float32, shape (n, channels)
        Samples, without missing values.
    gap : int
        Sample periods of silence before the segment (the device sends nothing), so a
        replayed case starts a fresh window in the daemon.
    """

    label: str | None
    data: np.ndarray
    gap: int = 0


class SyntheticSource:
    """Endless machine-vibration streams (see :mod:`edge.tools.synthetic`), no files needed.

    Every device cycles through the labels in its own shuffled order; each segment lasts
    ``segment_seconds`` (a random length in that range), so all classes appear on every
    device and the devices change class at different times.

    Parameters
    ----------
    labels : sequence of str
        Classes to generate, from :data:`edge.tools.synthetic.LABELS`.
    channels : int
        Accelerometer axes (1 to 6).
    rate_hz : float
        Sample rate the signals are generated for.
    segment_seconds : (float, float)
        Shortest and longest segment.
    seed : int
        Same seed, same streams.
    """

    def __init__(self, labels: Sequence[str] = synthetic.LABELS, *, channels: int = 3,
                 rate_hz: float = synthetic.SAMPLE_RATE_HZ,
                 segment_seconds: tuple[float, float] = (4.0, 8.0), seed: int = 0):
        unknown = [lab for lab in labels if lab not in synthetic.LABELS]
        if unknown:
            raise ValueError(f"unknown synthetic labels {unknown}; choose from {synthetic.LABELS}")
        if not 1 <= channels <= 6:
            raise ValueError(f"synthetic channels must be between 1 and 6, got {channels}")
        lo, hi = segment_seconds
        if not 0 < lo <= hi:
            raise ValueError(f"segment_seconds must be 0 < min <= max, got {segment_seconds}")
        self.labels = tuple(labels)
        self.channels = ("x", "y", "z", "u", "v", "w")[:channels]
        self.rate_hz = float(rate_hz)
        self.segment_seconds = (float(lo), float(hi))
        self.seed = seed

    def segments(self, device_index: int, n_devices: int) -> Iterator[Segment]:
        rng = np.random.default_rng([self.seed, device_index])
        lo, hi = self.segment_seconds
        while True:
            for k in rng.permutation(len(self.labels)):
                label = self.labels[k]
                n = max(1, int(round(rng.uniform(lo, hi) * self.rate_hz)))
                data = synthetic.signal(label, n, rng, channels=len(self.channels),
                                        sample_rate_hz=self.rate_hz)
                yield Segment(label, data)


class ArraySource:
    """Replays labelled cases: device ``k`` of ``N`` plays cases ``k, k+N, k+2N, ...``.

    Parameters
    ----------
    cases : list of ndarray, each shape (length_i, channels)
        The cases; missing values (NaN) are filled by linear interpolation.
    labels : list of str or None
        True label of each case.
    channels : sequence of str
        Channel names.
    rate_hz : float
        Sample rate to replay at.
    gap : int
        Sample periods of silence between two cases of one device (0: play back to back).
    loop : bool
        Start again from the device's first case when it has played them all.
    """

    def __init__(self, cases: list[np.ndarray], labels: Sequence[str | None] | None,
                 channels: Sequence[str], rate_hz: float, *, gap: int = 10,
                 loop: bool = False):
        if not cases:
            raise ValueError("no cases to replay")
        self.cases = [_fill_missing(np.asarray(c, dtype=np.float32)) for c in cases]
        self.case_labels = list(labels) if labels is not None else [None] * len(cases)
        self.channels = tuple(channels)
        self.rate_hz = float(rate_hz)
        self.gap = int(gap)
        self.loop = loop

    def segments(self, device_index: int, n_devices: int) -> Iterator[Segment]:
        mine = list(range(device_index % len(self.cases), len(self.cases), n_devices))
        if not mine:
            return
        order = itertools.cycle(mine) if self.loop else iter(mine)
        for i, k in enumerate(order):
            yield Segment(self.case_labels[k], self.cases[k], gap=self.gap if i else 0)


class TsSource(ArraySource):
    """A UEA/UCR ``.ts`` classification file: each case is one segment.

    ``.ts`` files carry no sample rate, so ``rate_hz`` is required.
    """

    def __init__(self, path, rate_hz: float, *, gap: int = 10, loop: bool = False):
        from edge.tools.sensorfiles import read_ts

        data = read_ts(path)
        # The trainer names .ts channels the same way, so its models read these streams.
        channels = [f"dim_{k}" for k in range(data.n_channels)]
        super().__init__(data.series, data.labels, channels, rate_hz, gap=gap, loop=loop)
        self.name = data.problem_name


class CsvSource:
    """A CSV sensor log (or a ``sigmoid-edge record`` recording) replayed as live streams.

    With a ``device`` column each recorded device is one simulated device (its own name);
    without one, the whole file is one stream, and ``N`` devices replay it from ``N``
    evenly spaced starting points. Segments are the runs of equal ``label``; a gap in the
    recorded ``ts`` larger than 5 sample periods becomes a pause of 10 periods.

    Parameters
    ----------
    path : path-like
        The CSV file.
    rate_hz : float, optional
        Replay rate; by default the median sample rate of the recording.
    loop : bool
        Start again when the data ends.
    """

    def __init__(self, path, rate_hz: float | None = None, *, loop: bool = False):
        from edge.tools.sensorfiles import read_csv

        log_ = read_csv(path)
        self.channels = log_.channels
        self.loop = loop
        devices = log_.device if log_.device is not None else np.full(len(log_.ts), "")
        self.device_names = list(dict.fromkeys(devices.tolist()))
        self._rows = {}
        periods = []
        for name in self.device_names:
            idx = np.flatnonzero(devices == name)
            idx = idx[np.argsort(log_.ts[idx], kind="stable")]
            ts = log_.ts[idx]
            labels = log_.label[idx] if log_.label is not None else np.full(len(idx), "")
            self._rows[name] = (ts, _fill_missing(log_.values[idx]), labels)
            if len(ts) > 1:
                periods.append(np.diff(ts))
        if rate_hz is None:
            steps = np.concatenate(periods) if periods else np.array([])
            steps = steps[steps > 0]
            if not len(steps):
                raise ValueError(f"{path}: cannot tell the sample rate from 'ts'; pass --rate")
            rate_hz = 1.0 / float(np.median(steps))
        self.rate_hz = float(rate_hz)
        self.named = log_.device is not None

    def segments(self, device_index: int, n_devices: int) -> Iterator[Segment]:
        if self.named:
            if device_index >= len(self.device_names):
                return
            ts, values, labels = self._rows[self.device_names[device_index]]
        else:
            ts, values, labels = self._rows[""]
            # Device k starts k/N of the way in and wraps around: the whole file, rotated.
            start = len(ts) * device_index // max(n_devices, 1)
            order = np.r_[start:len(ts), 0:start]
            ts, values, labels = ts[order], values[order], labels[order]
        pieces = list(_split_runs(ts, values, labels, self.rate_hz))
        while True:
            yield from pieces
            if not self.loop:
                return


def _split_runs(ts, values, labels, rate_hz, max_gap: int = 10):
    """Runs of one label without gaps; a recorded gap becomes a pause of at most ``max_gap``."""
    n = len(ts)
    if n == 0:
        return
    period = 1.0 / rate_hz
    step = np.diff(ts)
    gap_at = step > 5 * period
    # A step back in time is where a rotated or looped log wraps around: a new segment.
    change = (labels[1:] != labels[:-1]) | gap_at | (step < 0)
    bounds = np.concatenate([[0], np.flatnonzero(change) + 1, [n]])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        gap = max_gap if a > 0 and gap_at[a - 1] else 0
        yield Segment(str(labels[a]) or None, values[a:b], gap)


def _fill_missing(x: np.ndarray) -> np.ndarray:
    """Fill NaN by linear interpolation per channel (JSON has no NaN; a sensor sends a value)."""
    x = np.array(x, dtype=np.float32, copy=True)
    bad = np.isnan(x)
    if not bad.any():
        return x
    idx = np.arange(len(x))
    for c in np.flatnonzero(bad.any(axis=0)):
        ok = ~bad[:, c]
        x[:, c] = np.interp(idx, idx[ok], x[ok, c]) if ok.any() else 0.0
    return x


class DeviceStream:
    """One device's position in its segments, advanced by whole sample periods."""

    def __init__(self, name: str, segments: Iterator[Segment]):
        self.name = name
        self._segments = segments
        self._seg: Segment | None = None
        self._pos = 0  # next sample of the current segment
        self._gap_left = 0
        self.clock = 0  # sample periods since the start, including pauses
        self.label: str | None = None
        self.label_clock = 0  # clock at which self.label started
        self.done = False

    def advance(self, n: int) -> list[tuple[str, int, object]]:
        """Move ``n`` sample periods on; return events in time order.

        Events are ``("label", clock, label)`` when a segment starts and ``("data", clock,
        array)`` for samples, where ``clock`` is the period of the first sample.
        """
        events: list[tuple[str, int, object]] = []
        while n > 0 and not self.done:
            if self._seg is None or self._pos >= len(self._seg.data):
                self._seg = next(self._segments, None)
                self._pos = 0
                if self._seg is None:
                    self.done = True
                    break
                self._gap_left = self._seg.gap
            if self._gap_left:
                k = min(self._gap_left, n)
                self._gap_left -= k
                self.clock += k
                n -= k
                continue
            if self._pos == 0:
                self.label, self.label_clock = self._seg.label, self.clock
                events.append(("label", self.clock, self._seg.label))
            k = min(len(self._seg.data) - self._pos, n)
            events.append(("data", self.clock, self._seg.data[self._pos:self._pos + k]))
            self._pos += k
            self.clock += k
            n -= k
        return events


@dataclass
class SimStats:
    """What a simulation published."""

    messages: int = 0
    samples: int = 0
    label_messages: int = 0
    seconds: float = 0.0
    per_device: dict[str, int] = field(default_factory=dict)


class Simulator:
    """Publish the streams of a source on MQTT in real time.

    Parameters
    ----------
    client : paho.mqtt.client.Client
        A connected client with its network loop running.
    source : SyntheticSource, ArraySource or CsvSource
        Where the samples come from.
    devices : int
        How many devices to simulate (a CSV log with a ``device`` column brings its own).
    rate_hz : float, optional
        Samples per second per device; the source's rate by default.
    fmt : {"object", "array", "batch"}
        Payload format (module docstring).
    batch_seconds : float
        With ``fmt="batch"``, one message per device this often.
    topic, label_topic : str
        Templates with ``{device}``.
    qos : int
        QoS of sample messages (labels are always QoS 1).
    device_names : sequence of str, optional
        Names of the devices (default ``dev1``, ``dev2``, ...).
    """

    def __init__(self, client, source, *, devices: int = 1, rate_hz: float | None = None,
                 fmt: str = "object", batch_seconds: float = 0.1, topic: str = SENSOR_TOPIC,
                 label_topic: str = LABEL_TOPIC, qos: int = 0,
                 device_names: Sequence[str] | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        for name, tmpl in (("topic", topic), ("label topic", label_topic)):
            if "{device}" not in tmpl:
                raise ValueError(f"the {name} {tmpl!r} must contain '{{device}}'")
        if devices < 1:
            raise ValueError(f"devices must be >= 1, got {devices}")
        self.client = client
        self.source = source
        self.rate_hz = float(rate_hz or source.rate_hz)
        if not self.rate_hz > 0:
            raise ValueError(f"rate must be > 0 Hz, got {self.rate_hz}")
        if getattr(source, "named", False):
            device_names = source.device_names
            devices = len(device_names)
        names = list(device_names or [f"dev{k + 1}" for k in range(devices)])
        self.streams = [DeviceStream(name, source.segments(k, len(names)))
                        for k, name in enumerate(names)]
        self.fmt = fmt
        self.batch_seconds = float(batch_seconds)
        self.topic = topic
        self.label_topic = label_topic
        self.qos = qos
        channels = source.channels
        keys = ",".join(f"{json.dumps(c).replace('%', '%%')}:%.7g" for c in channels)
        self._object_fmt = '{"ts":%.6f,' + keys + "}"
        self._row_fmt = "[" + ",".join(["%.7g"] * len(channels)) + "]"
        self.stats = SimStats()
        self.t0 = 0.0
        self._seq: dict[str, int] = {}  # Sparkplug: next seq per edge node
        if fmt == "cbor":
            import cbor2

            self._cbor = cbor2.dumps
        elif fmt == "sparkplug":
            from edge import sparkplug

            self._spb = sparkplug
            if not topic.startswith(sparkplug.NAMESPACE + "/"):
                raise ValueError(f"--format sparkplug needs a topic like {SPARKPLUG_TOPIC}, "
                                 f"got {topic!r}")

    def _ts(self, clock: int) -> float:
        return self.t0 + clock / self.rate_hz

    def _publish_label(self, stream: DeviceStream, label, clock: int) -> None:
        payload = json.dumps({"device": stream.name, "label": label,
                              "ts": round(self._ts(clock), 6)})
        self.client.publish(self.label_topic.format(device=stream.name), payload, qos=1)
        self.stats.label_messages += 1

    def _publish_data(self, stream: DeviceStream, clock: int, data: np.ndarray) -> None:
        topic = self.topic.format(device=stream.name)
        rows = data.tolist()
        ts = self._ts(clock) + np.arange(len(rows)) / self.rate_hz
        publish = self.client.publish
        if self.fmt == "object":
            fmt = self._object_fmt
            for t, row in zip(ts.tolist(), rows, strict=True):
                publish(topic, fmt % (t, *row), qos=self.qos)
            sent = len(rows)
        elif self.fmt == "array":
            fmt = self._row_fmt
            for row in rows:
                publish(topic, fmt % tuple(row), qos=self.qos)
            sent = len(rows)
        elif self.fmt == "binary":
            publish(topic, encode_block(data, start=float(ts[0]), period=1.0 / self.rate_hz),
                    qos=self.qos)
            sent = 1
        elif self.fmt == "cbor":
            publish(topic, self._cbor({"samples": rows, "ts": ts.tolist()}), qos=self.qos)
            sent = 1
        elif self.fmt == "sparkplug":
            publish(topic, self._spb.encode_samples(
                # Whole ms, rounded up: a segment's first sample is never before its label.
                data, self.source.channels, start_ms=math.ceil(ts[0] * 1000.0),
                period_ms=1000.0 / self.rate_hz, seq=self._next_seq(topic)), qos=self.qos)
            sent = 1
        else:
            fmt = self._row_fmt
            samples = ",".join(fmt % tuple(row) for row in rows)
            times = ",".join(f"{t:.6f}" for t in ts.tolist())
            publish(topic, '{"samples":[' + samples + '],"ts":[' + times + "]}", qos=self.qos)
            sent = 1
        self.stats.messages += sent
        self.stats.samples += len(rows)
        self.stats.per_device[stream.name] = self.stats.per_device.get(stream.name, 0) + sent

    def _next_seq(self, topic: str) -> int:
        """The Sparkplug sequence number (0-255, one counter per edge node) of a message."""
        node = "/".join(topic.split("/")[:4])
        seq = self._seq.get(node, 0)
        self._seq[node] = (seq + 1) % 256
        return seq

    def _births(self) -> None:
        """Sparkplug: an NBIRTH per edge node, then a DBIRTH per device, before any data."""
        spb, channels = self._spb, self.source.channels
        for stream in self.streams:
            levels = self.topic.format(device=stream.name).split("/")
            node = "/".join(levels[:4])
            if node not in self._seq:
                self._seq[node] = 0
                levels[2] = "NBIRTH"
                self.client.publish("/".join(levels[:4]), spb.encode(
                    [], seq=self._next_seq("/".join(levels))), qos=1)
            levels[2] = "DBIRTH"
            self.client.publish("/".join(levels), spb.birth(
                channels, seq=self._next_seq("/".join(levels))), qos=1)

    def run(self, stop: threading.Event | None = None, duration: float | None = None) -> SimStats:
        """Publish until every stream ends, ``duration`` seconds pass or ``stop`` is set."""
        stop = stop or threading.Event()
        tick = self.batch_seconds if self.fmt in BATCHED else max(1.0 / self.rate_hz, 0.005)
        if self.fmt == "sparkplug":
            self._births()
        start = time.monotonic()
        self.t0 = time.time()
        sent_clock = 0
        next_repeat = start + LABEL_REPEAT_S
        while not stop.is_set():
            now = time.monotonic()
            elapsed = now - start
            if duration is not None and elapsed >= duration:
                elapsed = duration
            due = int(elapsed * self.rate_hz) - sent_clock
            if due > 0:
                for stream in self.streams:
                    for kind, clock, value in stream.advance(due):
                        if kind == "label":
                            self._publish_label(stream, value, clock)
                        else:
                            self._publish_data(stream, clock, value)
                sent_clock += due
            if now >= next_repeat:
                for stream in self.streams:
                    if not stream.done and stream._pos:  # inside a segment, not in a pause
                        self._publish_label(stream, stream.label, stream.label_clock)
                next_repeat = now + LABEL_REPEAT_S
            if all(s.done for s in self.streams):
                break
            if duration is not None and elapsed >= duration:
                break
            stop.wait(tick)
        end_clock = sent_clock
        infos = [self.client.publish(
            self.label_topic.format(device=s.name),
            json.dumps({"device": s.name, "label": None, "ts": round(self._ts(end_clock), 6)}),
            qos=1) for s in self.streams]
        self.stats.label_messages += len(infos)
        # QoS 1 and in order: once the last one is acknowledged, everything before was sent.
        # One deadline for all of them: a stop (SIGTERM) must end in seconds even when the
        # broker is slow to acknowledge (8 devices waited 5 s each: 40 s, under CI load).
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        for info in infos:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                break
        self.stats.seconds = time.monotonic() - start
        return self.stats


def make_source(data: str | None, *, synthetic_data: bool, rate_hz: float | None,
                loop: bool, seed: int = 0, gap: int = 10,
                segment_seconds: tuple[float, float] = (4.0, 8.0)):
    """The source the command line asks for: ``--synthetic``, a ``.ts`` or a ``.csv`` file."""
    if synthetic_data:
        if data:
            raise ValueError("give either DATA or --synthetic, not both")
        return SyntheticSource(rate_hz=rate_hz or synthetic.SAMPLE_RATE_HZ, seed=seed,
                               segment_seconds=segment_seconds)
    if not data:
        raise ValueError("give a DATA file (.ts or .csv) or --synthetic")
    path = Path(data)
    if not path.is_file():
        raise ValueError(f"{data}: no such file")
    if path.suffix.lower() == ".ts":
        if rate_hz is None:
            raise ValueError(f"{data}: .ts files carry no sample rate; pass --rate HZ")
        return TsSource(path, rate_hz, gap=gap, loop=loop)
    if path.suffix.lower() == ".csv":
        return CsvSource(path, rate_hz, loop=loop)
    raise ValueError(f"{data}: expected a .ts or .csv file")

