"""The worker: queue -> window buffers -> one onnxruntime call per batch -> post-process -> publish.

The network thread only parses and calls :meth:`Runner.submit`, which appends to a bounded
``deque`` (full: the oldest item is dropped and counted). The worker thread drains the
queue, groups the samples by device, pushes them into :class:`edge.windows.WindowBuffers`,
and runs *all* windows that became ready, across devices, through the model in one call.
Post-processing follows Edge Impulse's performance calibration: an optional moving average
of the last ``smoothing`` probability vectors per device, a ``min_confidence`` below which
the label is ``uncertain``, and an ``on_change`` mode that publishes only label changes.
A model with an ``anomaly_score`` output adds ``anomaly_score`` and ``anomaly`` (score above
the model's ``anomaly_threshold``) to each output; ``only_anomalies`` publishes only those.
With ``anomaly_min_windows`` K (and ``anomaly_window_count`` N), ``anomaly`` is a stream-level
alarm instead: K of the device's last N windows were anomalous (``anomaly_window`` keeps the
window's own flag), so one odd window is not an alarm.

Inference failures are per window: a window whose probabilities or anomaly score are not
finite gets no output, is counted (``stats.window_rejects``) and reported with its device;
only failures on in-range windows of several devices blame the model (``_model_at_fault``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

import numpy as np

from edge.capture import Capture
from edge.contract import input_bounds
from edge.models import LoadedModel, ModelSlot
from edge.stats import Stats
from edge.windows import WindowBuffers

log = logging.getLogger(__name__)

UNCERTAIN = "uncertain"
MAX_DRAIN = 20000  # queue items handled per cycle, so one cycle stays short
MAX_BATCH = 4096  # windows per onnxruntime call (bounds the batch's memory)
# After a cycle that left few items queued, the worker waits this long before the next: a
# cycle has a fixed cost (numpy calls per device, one inference), so back-to-back cycles of
# a few messages each would cost more CPU than the messages themselves at high rates. It
# adds at most this much latency; an idle worker wakes at once on the first message.
LINGER_S = 0.002
LINGER_ITEMS = 256
# A model is rolled back only when most of a batch's in-range windows fail and in-range
# windows of this many devices failed within ROLLBACK_MEMORY_S (one device never suffices).
ROLLBACK_DEVICES = 2
ROLLBACK_MEMORY_S = 60.0
INTERLEAVED_LOG_MAX = 10  # devices named in "arrive with holes" warnings, then only counted
OUTPUT_DROP_LOG_S = 10.0  # at most one "not published" warning per this many seconds

Publish = Callable[[str, str, int], object]


def _quote(text: str, _cache: dict = {}) -> str:  # noqa: B006 (a deliberate memo)
    """``json.dumps`` of a device name or label, memoised (they repeat every window)."""
    q = _cache.get(text)
    if q is None:
        if len(_cache) > 10000:
            _cache.clear()
        q = _cache[text] = json.dumps(text)
    return q


def _braces(text: str) -> str:
    """``text`` inside a ``str.format`` template, as itself."""
    return text.replace("{", "{{").replace("}", "}}")


class PostProcess:
    """Per-device smoothing, confidence threshold and publish-on-change.

    Parameters
    ----------
    labels : tuple of str
    smoothing : int
        Average of the last ``smoothing`` probability vectors (1 = off).
    min_confidence : float
        Below this, the label is ``"uncertain"``.
    on_change : bool
        Publish only when a device's label differs from the last one published.
    max_devices : int
        Devices whose history is kept (least recently used forgotten).
    counts : dict, optional
        Windows classified by label are counted here (before ``on_change`` drops any).
    anomaly_min_windows, anomaly_window_count : int
        K and N of the anomaly alarm rule "K of the device's last N windows are anomalous"
        (K = 0: every anomalous window is an alarm; N = 0: N = K).
    """

    def __init__(self, labels, *, smoothing: int = 1, min_confidence: float = 0.0,
                 on_change: bool = False, max_devices: int = 1000,
                 counts: dict[str, int] | None = None,
                 anomaly_min_windows: int = 0, anomaly_window_count: int = 0):
        self.labels = tuple(labels)
        self.counts = {} if counts is None else counts
        self.smoothing = smoothing
        self.min_confidence = min_confidence
        self.on_change = on_change
        self.max_devices = max_devices
        self.anomaly_min_windows = anomaly_min_windows
        self.anomaly_window_count = anomaly_window_count or anomaly_min_windows
        self._history: OrderedDict[str, deque] = OrderedDict()
        self._last: OrderedDict[str, str] = OrderedDict()
        # device -> (last N window flags, alarm on after the last window)
        self._flags: OrderedDict[str, list] = OrderedDict()

    def anomalies(self, devices: list[str], scores: list[float], threshold: float):
        """Window flags and alarms of one batch (in order, per device).

        Returns
        -------
        flags : list of bool
            Score above ``threshold``.
        alarms : list of bool
            The flags themselves, or with ``anomaly_min_windows`` K: at least K of the
            device's last N flags (this window's included) are set.
        onsets : int
            Alarms that started in this batch (a device's alarm going from off to on).
        """
        flags = [s > threshold for s in scores]
        k, n = max(self.anomaly_min_windows, 1), max(self.anomaly_window_count, 1)
        state, alarms, onsets = self._flags, [], 0
        for device, flag in zip(devices, flags, strict=True):
            entry = state.get(device)
            if entry is None:
                entry = state[device] = [deque(maxlen=n), False]
                if len(state) > self.max_devices:
                    state.popitem(last=False)
            else:
                state.move_to_end(device)
            entry[0].append(flag)
            alarm = sum(entry[0]) >= k
            onsets += alarm and not entry[1]
            entry[1] = alarm
            alarms.append(alarm)
        return flags, alarms, onsets

    def __call__(self, devices: list[str], probs: np.ndarray):
        """Post-process one batch.

        Returns
        -------
        probs : ndarray, shape (B, classes)
            The (smoothed) probabilities.
        keep : list of (index, label, confidence)
            The windows to publish, in order.
        """
        if self.smoothing > 1:
            probs = probs.copy()
            for i, device in enumerate(devices):
                hist = self._history.get(device)
                if hist is None:
                    hist = self._history[device] = deque(maxlen=self.smoothing)
                    if len(self._history) > self.max_devices:
                        self._history.popitem(last=False)
                else:
                    self._history.move_to_end(device)
                hist.append(probs[i])
                probs[i] = np.mean(hist, axis=0)
        best = probs.argmax(axis=1).tolist()
        conf = probs.max(axis=1).tolist()
        labels, threshold, last = self.labels, self.min_confidence, self._last
        counts = self.counts
        keep = []
        for i, device in enumerate(devices):
            label = labels[best[i]] if conf[i] >= threshold else UNCERTAIN
            counts[label] = counts.get(label, 0) + 1
            if self.on_change:
                if last.get(device) == label:
                    continue
                last[device] = label
                last.move_to_end(device)
                if len(last) > self.max_devices:
                    last.popitem(last=False)
            keep.append((i, label, conf[i]))
        return probs, keep


class Runner:
    """The worker thread between the network thread and the model.

    Parameters
    ----------
    slot : ModelSlot
        Read once per batch, so a model swap lands between batches.
    publish : callable
        ``publish(topic, payload, qos)``, e.g. :meth:`edge.mqtt.MqttLink.publish`.
    stats : Stats
    output_topic : str
        Template with ``{device}``.
    queue_size : int
        Bound of the queue from the network thread.
    hop : int
        0 = the model's hop.
    max_devices, gap_periods :
        For the window buffers.
    smoothing, min_confidence, on_change :
        For :class:`PostProcess`.
    only_anomalies : bool
        Publish only windows the model's anomaly score flags (after ``on_change``); with
        ``anomaly_min_windows``, only windows in alarm.
    anomaly_min_windows, anomaly_window_count :
        For :class:`PostProcess`: the K-of-N anomaly alarm rule.
    max_pending, pending :
        With QoS > 0 outputs, publish only while ``pending()`` (outputs the broker has not
        acknowledged yet) is below ``max_pending`` (0 = no bound); the rest are counted in
        ``stats.output_drops``.
    input_range_margin : float
        A window is "in the training range" when every value lies within the model's
        ``input_range`` widened by this many times the range's size on each side; only
        failures on such windows can roll a model back.
    capture : Capture, optional
        Publish the windows it selects (``--capture``); ``None`` costs nothing.
    publish_many : callable, optional
        ``publish_many([(topic, payload), ...], qos)``, e.g.
        :meth:`edge.mqtt.MqttLink.publish_many`: a batch's classifications in one call
        (else ``publish`` each).
    """

    def __init__(self, slot: ModelSlot, publish: Publish, stats: Stats, *,
                 output_topic: str = "edge/{device}/classification", queue_size: int = 10000,
                 hop: int = 0, max_devices: int = 1000, gap_periods: float = 5.0,
                 smoothing: int = 1, min_confidence: float = 0.0, on_change: bool = False,
                 output_qos: int = 1, only_anomalies: bool = False, max_pending: int = 0,
                 pending: Callable[[], int] | None = None, shared: bool = False,
                 anomaly_min_windows: int = 0, anomaly_window_count: int = 0,
                 input_range_margin: float = 0.5, capture: Capture | None = None,
                 publish_many: Callable[[list[tuple[str, str]], int], object] | None = None):
        self.slot = slot
        self.capture = capture
        self.publish = publish
        self.publish_many = publish_many
        self.stats = stats
        self.output_topic = output_topic
        self.output_qos = output_qos
        self.only_anomalies = only_anomalies
        self.max_pending = max_pending
        self.pending = pending or (lambda: 0)
        self._next_drop_log = 0.0
        self.hop_override = hop
        self.max_devices = max_devices
        self.gap_periods = gap_periods
        self.shared = shared
        self.post_args = dict(smoothing=smoothing, min_confidence=min_confidence,
                              on_change=on_change, max_devices=max_devices,
                              counts=stats.labels,
                              anomaly_min_windows=anomaly_min_windows,
                              anomaly_window_count=anomaly_window_count)
        self.queue: deque = deque(maxlen=queue_size)
        self.queue_size = queue_size
        stats.queue_depth = self.queue.__len__
        self._wake = threading.Event()
        self._idle = False
        self._stop = threading.Event()
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._loop, name="sigmoid-edge-worker",
                                        daemon=True)
        # Items the worker took off the queue (worker thread only); with ``stats.drops`` it
        # tells the network thread how far the queue has been consumed (manual acks).
        self.taken = 0
        # With a persistent session: the samples of partial windows, journaled after each
        # cycle before its acknowledgements (edge/journal.py).
        self.journal = None
        # Called on the worker thread after every cycle (e.g. to acknowledge messages).
        self.after_cycle: list[Callable[[], None]] = []
        # Called as hook(model, error) when inference fails; True means another model now
        # serves (a rollback) and the batch is run again.
        self.on_model_failure: Callable[[LoadedModel, Exception], bool] | None = None
        # Called as hook(reason, detail, device) for each device whose windows the model
        # gave no usable output for (the daemon reports them on the errors topic).
        self.on_window_rejected: Callable[[str, str, str], None] = lambda *_: None
        self.input_range_margin = input_range_margin
        self._bounds = None
        self._model: LoadedModel | None = None
        # Restart markers (values None) submitted (network thread) and handled (worker).
        self.restarts = 0
        self._restarts_done = 0
        self.buffers: WindowBuffers | None = None
        self.post: PostProcess | None = None
        self._use(slot.current)

    # network thread
    def submit(self, device: str, values, ts, received: float) -> None:
        """Enqueue one parsed payload (never blocks; a full queue drops its oldest item)."""
        q = self.queue
        if len(q) >= self.queue_size:
            self.stats.drops += 1
        q.append((device, values, ts, received))
        if self._idle:
            self._wake.set()

    def restart(self, device: str, received: float) -> None:
        """Enqueue "restart this device's window" behind what it sent so far (never blocks).

        For inputs that know when a stream breaks (a Sparkplug rebirth or sequence gap).
        """
        self.restarts += 1  # before the item: the worker never sees one it did not count
        self.submit(device, None, None, received)

    # lifecycle
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Finish the batch in hand and what is queued (up to ``timeout``), then stop."""
        self._deadline = time.monotonic() + timeout
        if not self._thread.is_alive():
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout + 1.0)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # worker thread
    def _use(self, model: LoadedModel) -> None:
        info = model.info
        hop = self.hop_override or info.hop
        old = self.buffers
        if old is None or (old.window, old.channels, old.hop) != (
                info.window, len(info.channels), hop):
            if old is not None and len(old):
                log.warning("new model has a different window/channels/hop: %d device "
                            "buffers restarted", len(old))
            self.buffers = WindowBuffers(
                info.window, len(info.channels), hop, max_devices=self.max_devices,
                sample_rate_hz=info.sample_rate_hz, gap_periods=self.gap_periods,
                watch_interleaving=self.shared)
        else:
            self.buffers.period = 1.0 / info.sample_rate_hz if info.sample_rate_hz else None
        if self.post is None or self.post.labels != info.labels:
            self.post = PostProcess(info.labels, **self.post_args)
        self._model = model
        self._model_json = json.dumps(model.identity)
        # A whole output is one str.format (braces in labels and the model escaped): device,
        # label, confidence, one probability per label, the anomaly fields, start, end.
        probs = ", ".join(_braces(json.dumps(k)) + ": {:.6f}" for k in info.labels)
        self._output_format = (
            '{{"device": {}, "label": {}, "confidence": {:.6f}, "probabilities": {{'
            + probs + '}}, {}"window_start": {:.6f}, "window_end": {:.6f}, "model": '
            + _braces(self._model_json) + "}}")
        self._period = 1.0 / info.sample_rate_hz if info.sample_rate_hz else 0.0
        bounds = input_bounds(info, self.input_range_margin)
        self._bounds = None if bounds is None else (
            np.array(bounds[0], np.float32), np.array(bounds[1], np.float32))
        self._step_cache: dict[int, np.ndarray] = {}
        self._blamed: dict[str, float] = {}  # device -> when its in-range windows failed

    def _loop(self) -> None:
        q = self.queue
        while True:
            if not q:
                if self._stop.is_set():
                    return
                self._idle = True
                self._wake.clear()
                if not q:
                    self._wake.wait(0.2)
                self._idle = False
                continue
            if self._stop.is_set() and time.monotonic() > self._deadline:
                log.warning("stopping with %d queued messages unprocessed", len(q))
                return
            try:
                self.cycle()
            except Exception:  # never let the worker die; the next cycle starts clean
                log.exception("worker cycle failed")
                time.sleep(0.05)
            if self.journal is not None:  # before the acknowledgements (after_cycle)
                try:
                    self.journal.commit(self.buffers)
                except OSError as e:
                    log.error("journal %s not written (%s): a crash now would lose the "
                              "samples of partial windows", self.journal.path, e.strerror)
            for hook in self.after_cycle:
                hook()
            if len(q) < LINGER_ITEMS and not self._stop.is_set():
                time.sleep(LINGER_S)

    def cycle(self) -> int:
        """Drain the queue once: buffer, infer, publish. Returns windows classified."""
        model = self.slot.current
        if model is not self._model:
            self._use(model)
        q = self.queue
        pop = q.popleft
        groups: dict[str, list] = {}
        n = min(len(q), MAX_DRAIN)
        self.taken += n
        for _ in range(n):
            item = pop()
            g = groups.get(item[0])
            if g is None:
                groups[item[0]] = [item]
            else:
                g.append(item)
        buffers = self.buffers
        width = buffers.channels
        newest: dict[str, float] = {}
        gaps_before = buffers.gaps
        lags = self.stats.input_lags
        journal = self.journal
        now = time.time()
        if self.restarts != self._restarts_done:
            segments = self._split_restarts(groups)
        else:
            segments = [(device, items, False) for device, items in groups.items()]
        for device, items, restarted in segments:
            if restarted:  # a restart marker (Sparkplug rebirth, sequence gap) came first
                buffers.forget(device)
                if journal is not None:
                    journal.forget(device)
            if not items:
                continue
            own = False
            for restart, part in (self._by_message(items, buffers.window) if self.shared
                                  else ((False, items),)):
                if restart:
                    buffers.forget(device)
                    if journal is not None:
                        journal.forget(device)
                chunk = self._chunk(part, width)
                if chunk is None:
                    continue
                values, times, own = chunk
                self.stats.samples += len(values)
                buffers.push(device, values, times, own)
                if journal is not None:
                    journal.record(device, values, times, own)
            newest[device] = items[-1][3]
            if own:  # the sample's own time: how long it waited (in the broker, too)
                lags.append(now - float(times[-1]))
        self.stats.gaps += buffers.gaps - gaps_before
        if buffers.interleaved:
            self._interleaved(buffers.interleaved)
        self.stats.evictions = buffers.evictions
        windows, devices, starts, ends = buffers.take()
        if not devices:
            return 0
        self.stats.windows += len(devices)
        for lo in range(0, len(devices), MAX_BATCH):
            self._classify(windows[lo:lo + MAX_BATCH], devices[lo:lo + MAX_BATCH],
                           starts[lo:lo + MAX_BATCH], ends[lo:lo + MAX_BATCH], newest)
        return len(devices)

    def _split_restarts(self, groups: dict) -> list:
        """Cut each device's items at its restart markers (only when some were queued).

        Returns ``(device, items, restart)``: ``restart`` True means "forget the device's
        window, then push ``items``".
        """
        out = []
        for device, items in groups.items():
            part: list = []
            out.append((device, part, False))
            for item in items:
                if item[1] is None:
                    self._restarts_done += 1
                    part = []
                    out.append((device, part, True))
                else:
                    part.append(item)
        return out

    @staticmethod
    def _by_message(items: list, window: int):
        """Split at payloads that hold a whole window: each such one starts its device afresh.

        Behind a shared subscription the device's previous message may have gone to another
        daemon, so a window must not join the two: a whole-window message is classified on
        its own, and exactly once across the group.
        """
        part: list = []
        for item in items:
            if type(item[1]) is not list and len(item[1]) >= window:
                if part:
                    yield False, part
                    part = []
                yield True, [item]
            else:
                part.append(item)
        if part:
            yield False, part

    def _interleaved(self, devices: list[str]) -> None:
        """Say once per device that its samples arrive with holes (a non-sticky broker)."""
        if self.stats.interleaved_devices < INTERLEAVED_LOG_MAX:
            log.warning(
                "samples of %s arrive with holes: behind a shared subscription the broker "
                "seems to spread one device over several daemons. Use a broker with sticky "
                "dispatch per topic (EMQX: broker.shared_subscription_strategy = hash_topic), "
                "whole-window messages, or --shard K/N instead (README, 'Many daemons')",
                ", ".join(map(repr, devices[:INTERLEAVED_LOG_MAX])))
        self.stats.interleaved_devices += len(devices)
        devices.clear()

    def _chunk(self, items: list, width: int):
        """One device's queued payloads -> (values [n, C] float32, times [n], own_times)."""
        if all(type(it[1]) is list for it in items):  # the common case: one sample each
            rows = [it[1] for it in items]
            if len(rows[0]) != width:
                return None  # parsed for a model with other channels, before a swap
            values = np.array(rows, dtype=np.float32)
            ts = [it[2] for it in items]
            if None in ts:
                return values, np.array([it[3] for it in items], dtype=np.float64), False
            return values, np.array(ts, dtype=np.float64), True
        parts, times, own = [], [], True
        for _, vals, ts, received in items:
            if type(vals) is list:
                vals = np.array([vals], dtype=np.float32)
            if vals.shape[1] != width:
                continue
            if ts is None:  # the last sample arrived now, the others a period apart before
                own = False
                t = received - self._steps(len(vals))[::-1]
            elif type(ts) is float:  # the first sample's time
                t = ts + self._steps(len(vals))
            else:  # one time per sample (float64 [n], checked by the parser)
                t = ts
            parts.append(vals)
            times.append(t)
        if not parts:
            return None
        return np.concatenate(parts), np.concatenate(times), own

    def _output_dropped(self, n: int) -> None:
        """Count classifications not published; log at most once per OUTPUT_DROP_LOG_S."""
        self.stats.output_drops += n
        now = time.monotonic()
        if now >= self._next_drop_log:
            self._next_drop_log = now + OUTPUT_DROP_LOG_S
            log.warning("classifications not published: %d are still waiting for the broker "
                        "(max_pending_outputs); is it down or slow? %d dropped so far",
                        self.pending(), self.stats.output_drops)

    def _capture(self, windows, devices, starts, ends, probs, scores, flags) -> None:
        """Publish the windows :attr:`capture` selects, within its rate and max_pending."""
        capture, stats, model = self.capture, self.stats, self._model
        idx, reasons = capture.select(probs, flags)
        for i, reason in zip(idx.tolist(), reasons, strict=True):
            device = devices[i]
            if not capture.allow(device):
                stats.captures_limited += 1
                continue
            if self.max_pending and self.pending() >= self.max_pending:
                stats.capture_drops += 1
                continue
            info = model.info
            payload = capture.payload(
                device=device, window=np.ascontiguousarray(windows[i]), start=starts[i],
                end=ends[i], labels=info.labels, channels=info.channels, probs=probs[i],
                reason=reason, model=model.identity, sample_rate_hz=info.sample_rate_hz,
                score=None if scores is None else scores[i],
                anomaly=None if flags is None else flags[i])
            self.publish(capture.topic.replace("{device}", device), payload, 1)
            stats.captures += 1

    def _steps(self, n: int) -> np.ndarray:
        """``[0, period, ..., (n - 1) * period]``, memoised: batches repeat their size."""
        steps = self._step_cache.get(n)
        if steps is None:
            if len(self._step_cache) > 64:
                self._step_cache.clear()
            steps = self._step_cache[n] = np.arange(n) * self._period
        return steps

    def _infer(self, model: LoadedModel, windows: np.ndarray):
        """Run a batch: ``(probs, scores, failed, error)``.

        ``failed`` is None when every window gave finite outputs, else a bool mask of the
        windows that did not (non-finite outputs, or the runtime raised on that window
        alone when run on its own), and ``error`` describes the first failure.
        """
        began = time.perf_counter()
        try:
            probs, scores = model.predict_scored(windows)
        except Exception as e:  # find the windows the runtime refuses, one at a time
            n = len(windows)
            probs = np.full((n, len(model.info.labels)), np.nan, np.float32)
            scores = None if model.anomaly_threshold is None else np.full(n, np.nan, np.float32)
            for i in range(n):
                try:
                    p, sc = model.predict_scored(windows[i:i + 1])
                except Exception:
                    continue
                probs[i] = p[0]
                if scores is not None:
                    scores[i] = sc[0]
            error: Exception = e
        else:
            self.stats.inference_seconds.observe(time.perf_counter() - began)
            error = FloatingPointError("the model returned non-finite outputs")
        failed = ~np.isfinite(probs).all(axis=1)
        if scores is not None:
            failed |= ~np.isfinite(scores)
        if not failed.any():
            return probs, scores, None, None
        return probs, scores, failed, error

    def _model_at_fault(self, windows: np.ndarray, devices: list[str],
                        failed: np.ndarray) -> bool:
        """Whether failures indict the model rather than the data (see :meth:`_classify`).

        True when the model has a training range, most of this batch's in-range windows
        failed, and in-range windows of at least :data:`ROLLBACK_DEVICES` devices failed
        within :data:`ROLLBACK_MEMORY_S` seconds.
        """
        bounds = self._bounds
        if bounds is None:
            return False  # no training range: a failure may always be the data's fault
        inside = ((windows >= bounds[0]) & (windows <= bounds[1])).all(axis=(1, 2))
        blamed = failed & inside
        if not blamed.any() or blamed.sum() * 2 <= inside.sum():
            return False
        now = time.monotonic()
        recent = self._blamed
        for i in np.flatnonzero(blamed).tolist():
            recent[devices[i]] = now
        for device in [d for d, t in recent.items() if now - t > ROLLBACK_MEMORY_S]:
            del recent[device]
        return len(recent) >= ROLLBACK_DEVICES

    def _reject_windows(self, failed: np.ndarray, devices: list[str], error) -> None:
        """Count (and report, rate-limited) each window the model gave no usable output for."""
        idx = np.flatnonzero(failed).tolist()
        self.stats.window_rejects["inference_failed"] += len(idx)
        per_device: dict[str, int] = {}
        for i in idx:
            per_device[devices[i]] = per_device.get(devices[i], 0) + 1
        for device, n in per_device.items():
            self.on_window_rejected("inference_failed",
                                    f"{n} window(s): {type(error).__name__}: {error}"[:300],
                                    device)

    def _classify(self, windows, devices, starts, ends, newest) -> None:
        model = self._model
        probs, scores, failed, error = self._infer(model, windows)
        if failed is not None:
            # Failures are per window. The model is blamed (rolled back, the batch re-run)
            # only when it fails on windows that are valid and inside its training range,
            # most of the batch, from more than one device (_model_at_fault): hostile or
            # broken data from one sensor can never undo a validly signed model.
            if self._model_at_fault(windows, devices, failed):
                hook = self.on_model_failure
                if hook is not None and hook(model, error):
                    new = self.slot.current
                    self._use(new)
                    if (new is not model and new.info.window == windows.shape[1]
                            and len(new.info.channels) == windows.shape[2]):
                        self._classify(windows, devices, starts, ends, newest)
                        return
            self._reject_windows(failed, devices, error)
            ok = ~failed
            if not ok.any():
                return
            windows, probs = windows[ok], probs[ok]
            scores = None if scores is None else scores[ok]
            devices = [d for d, good in zip(devices, ok.tolist(), strict=True) if good]
            starts, ends = starts[ok], ends[ok]
        stats = self.stats
        stats.inferences += 1
        stats.classifications += len(devices)
        stats.batch_max = max(stats.batch_max, len(devices))
        raw = probs
        probs, keep = self.post(devices, probs)
        rows = probs.tolist()
        starts, ends = starts.tolist(), ends.tolist()
        output_format = self._output_format
        topic = self.output_topic
        qos = self.output_qos
        outputs: list[tuple[str, str]] = []
        published = dropped = 0
        # Room left under max_pending_outputs: QoS > 0 outputs wait in the MQTT client until
        # the broker acknowledges them, in memory, for as long as an outage lasts.
        room = self.max_pending - self.pending() if qos and self.max_pending else len(keep)
        flags = None
        if scores is not None:
            scores = scores.tolist()
            flags, alarms, onsets = self.post.anomalies(devices, scores, model.anomaly_threshold)
            stats.anomalous_windows += sum(flags)
            stats.anomaly_alarms += onsets
            rule = self.post.anomaly_min_windows > 0
        # Formatted by hand: json.dumps of a dict per window cost more than the inference.
        for i, label, conf in keep:
            anomaly = ""
            if scores is not None:
                if self.only_anomalies and not alarms[i]:
                    continue
                anomaly = (f'"anomaly_score": {scores[i]:.6g}, '
                           f'"anomaly": {"true" if alarms[i] else "false"}, ')
                if rule:
                    anomaly += f'"anomaly_window": {"true" if flags[i] else "false"}, '
            if published >= room:
                dropped += 1
                continue
            device = devices[i]
            payload = output_format.format(_quote(device), _quote(label), conf, *rows[i],
                                           anomaly, starts[i], ends[i])
            outputs.append((topic.replace("{device}", device), payload))
            published += 1
        if outputs and self.publish_many is not None:
            self.publish_many(outputs, qos)
        else:
            for output in outputs:
                self.publish(*output, qos)
        stats.published += published
        if dropped:
            self._output_dropped(dropped)
        if self.capture is not None:
            self._capture(windows, devices, starts, ends, raw, scores, flags)
        now = time.time()
        lags = [now - received for received in map(newest.get, set(devices))
                if received is not None]
        stats.latencies.extend(lags)
        stats.latency_seconds.observe_many(lags)  # one histogram update per batch
