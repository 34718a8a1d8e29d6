"""``sigmoid-edge run``: wires config, MQTT link, parser, runner, model slot and stats.

Data flows one way: :mod:`edge.mqtt` (network thread) -> :mod:`edge.payload` ->
:class:`edge.runner.Runner` queue -> :mod:`edge.windows` -> model -> publish. This module is
the only place that knows all of them. The main thread only waits on the stop event
(Frigate's pattern: ``stop.wait(interval)`` is the loop's sleep), publishes stats, logs
drops, and reloads the model on SIGHUP.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import zlib
from collections import deque

from edge import __version__, topics
from edge.capture import Capture
from edge.config import Config, check_device_name, shard_of
from edge.formats import Decoder
from edge.journal import Journal
from edge.models import LoadedModel, ModelError, ModelSlot
from edge.mqtt import MqttLink
from edge.payload import PayloadParser, Rejected
from edge.runner import Runner
from edge.stats import RateLimit, Stats, to_json
from edge.updates import ModelUpdates, verify_startup

log = logging.getLogger(__name__)

TICK = 0.25  # main loop period (s): signal handling, reloads
DROP_LOG_INTERVAL = 10.0  # at most one "queue full" log line per this many seconds


def make_parser(model: LoadedModel, cfg: Config):
    """The payload decoder for a model's channels, ``payload`` and the channel mapping.

    A :class:`edge.formats.Decoder` (JSON, binary blocks, CBOR), or a
    :class:`edge.sparkplug.SparkplugDecoder` with ``payload = "sparkplug"``.

    Raises
    ------
    ModelError
        If the mapping names channels the model does not have, or ``only_anomalies`` or
        ``anomaly_min_windows`` is set and the model has no ``anomaly_score`` output.
    """
    for key, wanted in (("only-anomalies", cfg.only_anomalies),
                        ("anomaly-min-windows", cfg.anomaly_min_windows)):
        if wanted and model.anomaly_threshold is None:
            raise ModelError(f"{model.source}: --{key} needs a model with an 'anomaly_score' "
                             "output (sigmoid-train fit-anomaly or fit --anomaly)")
    if cfg.capture == "anomalies" and model.anomaly_threshold is None:
        raise ModelError(f"{model.source}: --capture anomalies needs a model with an "
                         "'anomaly_score' output (sigmoid-train fit-anomaly or fit --anomaly); "
                         "use --capture uncertain for a classifier")
    try:
        parser = PayloadParser(model.info.channels, cfg.channels,
                               max_bytes=cfg.max_payload_bytes, max_depth=cfg.max_depth)
    except ValueError as e:
        raise ModelError(f"{model.source}: {e}") from None
    if cfg.payload == "sparkplug":
        from edge.sparkplug import SparkplugDecoder

        # Under --shard or a shared subscription this daemon sees only some of a node's
        # messages, so its sequence numbers always look like gaps: not checked then.
        return SparkplugDecoder(model.info.channels, cfg.input_topic,
                                max_bytes=cfg.max_payload_bytes, max_devices=cfg.max_devices,
                                check_seq=not (cfg.shard or topics.split_share(
                                    cfg.input_topic)[0]))
    return Decoder(cfg.payload, parser)


def make_capture(cfg: Config) -> Capture | None:
    """The capture policy of ``--capture`` (``None`` for ``none``: no cost at all)."""
    if cfg.capture == "none":
        return None
    return Capture(cfg.capture, cfg.capture_topic, cfg.node, below=cfg.capture_threshold,
                   rate=cfg.capture_rate, sample=cfg.capture_sample, max_devices=cfg.max_devices)


class Daemon:
    """One running edge daemon.

    Parameters
    ----------
    cfg : Config
        Validated configuration.
    model : LoadedModel, optional
        Already loaded (``--check-config`` path); loaded from ``cfg.model`` otherwise.

    Examples
    --------
    >>> daemon = Daemon(cfg)        # doctest: +SKIP
    >>> daemon.run()                # blocks until SIGTERM/SIGINT  # doctest: +SKIP
    """

    def __init__(self, cfg: Config, model: LoadedModel | None = None):
        self.cfg = cfg
        # With --trusted-key the model file must carry a valid MODEL.sig (raises ModelError).
        keys, verified, model = verify_startup(cfg, model)
        self.parser = make_parser(model, cfg)
        self.slot = ModelSlot(model, threads=cfg.threads, runtime=cfg.runtime,
                              extra_ops=cfg.extra_ops)
        # Checked on every new model before it replaces the current one.
        self.slot.checks.append(lambda new: make_parser(new, cfg))
        self.slot.listeners.append(self._on_swap)
        self.stats = Stats()
        self.link = MqttLink.from_config(cfg)
        self.stats.pending_outputs = self.link.pending
        self.runner = Runner(
            self.slot, self.link.publish, self.stats, output_topic=cfg.output_topic,
            output_qos=cfg.output_qos, max_pending=cfg.max_pending_outputs,
            pending=self.link.pending,
            queue_size=cfg.queue_size, hop=cfg.hop, max_devices=cfg.max_devices,
            gap_periods=cfg.gap_periods, smoothing=cfg.smoothing,
            min_confidence=cfg.min_confidence, on_change=cfg.on_change,
            only_anomalies=cfg.only_anomalies, anomaly_min_windows=cfg.anomaly_min_windows,
            anomaly_window_count=cfg.anomaly_window_count,
            input_range_margin=cfg.input_range_margin, capture=make_capture(cfg),
            shared=bool(topics.split_share(cfg.input_topic)[0]),
            publish_many=self.link.publish_many,
        )
        self.runner.on_window_rejected = self._window_rejected
        self._window_errors_limit = RateLimit(per_second=1.0, burst=5)  # worker thread only
        self.filter, self._device_level = topics.to_filter(cfg.input_topic)
        self.sparkplug = cfg.payload == "sparkplug"
        if self.sparkplug:  # births, deaths and sequence numbers too, not only data
            self.filter = self.parser.filter
        self._known_devices: set[str] = set()
        self._devices: dict[bytes, str] = {}  # raw topic -> its (checked) device name
        # --shard K/N: every daemon gets every message and keeps its own devices.
        self._shard = shard_of(cfg.shard) if cfg.shard else None
        self._mine: dict[str, bool] = {}
        if self._shard is not None:  # drop other shards' messages before paho decodes them
            self.link.client.skip_topic = self._not_mine
            self.link.client.on_skipped = self._count_not_mine
        self._errors_limit = RateLimit(per_second=1.0, burst=5)
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()
        self._accepting = True
        # Persistent session: a QoS > 0 message is acknowledged only once the worker has
        # taken it into the window buffers, so a crash before that loses nothing (the broker
        # sends it again). Entries are (messages submitted up to it, mid, qos), acked in
        # order once the worker has taken (or dropped) that many.
        self._manual_ack = cfg.persistent_session
        self._acks: deque[tuple[int, int, int]] = deque()
        self._submitted = 0
        self._ack_lock = threading.Lock()
        if self._manual_ack:
            self.runner.after_cycle.append(self.flush_acks)
        self.journal = None
        if cfg.journal_path is not None:
            try:
                self.journal = Journal(cfg.journal_path, fsync=cfg.journal_fsync,
                                       max_bytes=cfg.journal_max_bytes)
                self.journal.replay(self.runner.buffers)
            except OSError as e:
                log.error("journal %s unusable (%s): partial windows are not protected "
                          "across a crash; set journal = \"PATH\" to a writable file",
                          cfg.journal_path, e.strerror)
                self.journal = None
            self.runner.journal = self.journal
        self.updates = ModelUpdates(cfg, self.slot, self.link.publish, keys, verified,
                                    stats=self.stats)
        self.runner.on_model_failure = self.updates.on_model_failure
        self.link.subscribe(self.filter, cfg.qos, self.on_input, default=True)
        if self.updates.push_enabled:  # without a trusted key remote push is off
            self.link.subscribe(cfg.model_topic, 1, self._on_push)
        self.link.on_connected.append(self.publish_info)
        self.metrics = None  # edge.metrics.MetricsServer, started by start() with metrics_port
        self._rate_basis = (time.monotonic(), 0, 0)
        self.ha = None
        if cfg.ha_discovery:
            from edge.homeassistant import Discovery
            self.ha = Discovery.from_config(cfg, self.link.publish, lambda: self.slot.current)
            self.slot.listeners.append(self.ha.on_swap)
            # QoS 0: the birth message needs no (ordered, manual) acknowledgement.
            self.link.subscribe(self.ha.birth_topic, 0, self.ha.on_birth)

    # network thread: parse and enqueue, nothing else
    def on_input(self, msg) -> None:
        """Handle one input message (paho's network thread)."""
        stats = self.stats
        stats.messages_in += 1
        if not self._accepting:
            return
        if self.sparkplug:
            self._on_sparkplug(msg)
            return
        device = "?"
        try:
            # The device of a topic seen before (checked then): one lookup on its raw bytes.
            device = self._devices.get(msg._topic)
            if device is None:
                device = msg.topic.split("/")[self._device_level]
                if device not in self._known_devices:
                    self._check_device(device)
                if len(self._devices) > 4 * self.cfg.max_devices:  # topics under {device}/#
                    self._devices.clear()
                self._devices[msg._topic] = device
            if self._shard is not None and not self._owns(device):
                stats.not_mine += 1
                self._handled(msg)
                return
            values, ts = self.parser.parse_message(msg)
        except Exception as e:  # a bug must cost one message, not the daemon
            self._refuse(e, device, msg)
            return
        if self.ha is not None:
            self.ha.seen(device)
        self.runner.submit(device, values, ts, time.time())
        if self._manual_ack:
            self._submitted += 1
            self._handled(msg)

    def _check_device(self, device: str) -> None:
        """Remember a new device name, or raise Rejected (bad_device) for an unsafe one."""
        if not check_device_name(device):
            raise Rejected("bad_device", f"device name {device!r} is not allowed in a topic")
        if len(self._known_devices) > 4 * self.cfg.max_devices:
            self._known_devices.clear()
            self._devices.clear()
        self._known_devices.add(device)

    def _refuse(self, exc: Exception, device: str, msg) -> None:
        """Count and report a message that was rejected (or hit a bug), and acknowledge it."""
        if isinstance(exc, Rejected):
            self._reject(exc.reason, exc.detail, device, msg)
        else:
            log.debug("internal error on a message", exc_info=True)
            self._reject("internal_error", f"{type(exc).__name__}: {exc}", device, msg)
        self._handled(msg, flush=True)

    def _on_sparkplug(self, msg) -> None:
        """One Sparkplug B message: samples, or window restarts on births, deaths and gaps."""
        device = "?"
        try:
            events = self.parser.handle(msg.topic, msg.payload)
            for device, _, _ in events:
                if device not in self._known_devices:
                    self._check_device(device)
        except Exception as e:
            self._refuse(e, device, msg)
            return
        if self._shard is not None:
            events = [e for e in events if self._owns(e[0])]
        now = time.time()
        for device, values, ts in events:
            if values is None:
                self.runner.restart(device, now)
            else:
                if self.ha is not None:
                    self.ha.seen(device)
                self.runner.submit(device, values, ts, now)
        if self._manual_ack:
            self._submitted += len(events)
        self._handled(msg, flush=not events)

    def _owns(self, device: str) -> bool:
        """Whether ``device`` is this daemon's under ``--shard K/N`` (memoised per name).

        crc32 of the UTF-8 name: the same on every platform and Python, unlike ``hash()``.
        """
        mine = self._mine.get(device)
        if mine is None:
            if len(self._mine) > 4 * self.cfg.max_devices:
                self._mine.clear()
            k, n = self._shard
            mine = self._mine[device] = zlib.crc32(
                device.encode("utf-8", "surrogatepass")) % n == k
        return mine

    def _not_mine(self, topic: bytes) -> bool:
        """``--shard``: whether a PUBLISH's raw topic belongs to another daemon's device.

        Asked by the client once per topic, before it decodes a message (network thread);
        the client remembers the answer and drops that topic's messages unread. A topic it
        cannot read goes the normal way, where it is rejected and counted.
        """
        try:
            device = topic.decode("utf-8").split("/")[self._device_level]
        except (UnicodeDecodeError, IndexError):
            return False
        return not self._owns(device)

    def _count_not_mine(self, n: int) -> None:
        """Count ``n`` messages the client dropped as other shards' (once per read)."""
        self.stats.messages_in += n
        self.stats.not_mine += n

    def _on_push(self, msg) -> None:
        """A model push (network thread): hand it to the update thread, then acknowledge it.

        With a persistent session every QoS > 0 message needs our acknowledgement, pushes
        included, or it would hold one of the broker's in-flight slots for good.
        """
        self.updates.on_push(msg)
        self._handled(msg, flush=True)

    def _handled(self, msg, flush: bool = False) -> None:
        """Queue the acknowledgement of ``msg`` behind everything submitted before it."""
        if self._manual_ack and msg.qos:
            seq = self._submitted
            self._acks.append((seq, msg.mid, msg.qos))
            # The worker may have taken the message already (and flushed before this entry
            # existed) and then gone idle: flush here, or the broker, waiting for the ack
            # with its in-flight window full, would send nothing more.
            if flush or seq <= self.runner.taken + self.stats.drops:
                self.flush_acks()

    def flush_acks(self) -> None:
        """Acknowledge every message the worker has taken (or dropped), in order."""
        with self._ack_lock:
            done = self.runner.taken + self.stats.drops
            acks = self._acks
            while acks and acks[0][0] <= done:
                _, mid, qos = acks.popleft()
                self.link.ack(mid, qos)

    def _reject(self, reason: str, detail: str, device: str, msg) -> None:
        self.stats.reject(reason)
        if self._errors_limit.allow():
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                topic = repr(msg._topic)
            suppressed = self._errors_limit.suppressed
            self._errors_limit.suppressed = 0
            log.warning("rejected a message on %r: %s: %s", topic, reason, detail)
            self.link.publish(self.cfg.errors_topic, to_json({
                "reason": reason, "detail": detail, "device": device if
                check_device_name(device) else None, "topic": topic,
                "suppressed_since_last": suppressed, "time": round(time.time(), 3),
            }), qos=1)

    def _window_rejected(self, reason: str, detail: str, device: str) -> None:
        """Windows of ``device`` the model gave no usable output for (worker thread)."""
        limit = self._window_errors_limit
        if limit.allow():
            suppressed, limit.suppressed = limit.suppressed, 0
            log.warning("no classification for device %r: %s: %s", device, reason, detail)
            self.link.publish(self.cfg.errors_topic, to_json({
                "reason": reason, "detail": detail, "device": device,
                "model": self.slot.current.identity, "suppressed_since_last": suppressed,
                "time": round(time.time(), 3)}), qos=1)

    # model swaps
    def _on_swap(self, old: LoadedModel, new: LoadedModel) -> None:
        parser = make_parser(new, self.cfg)
        if self.sparkplug:  # keep the alias tables and sequence numbers of every node
            parser.adopt(self.parser)
        self.parser = parser
        self.stats.model_swaps += 1
        if self.link.connected.is_set():  # else on_connected publishes it
            self.publish_info()

    def publish_info(self) -> None:
        """Publish the retained ``info`` (on every connect and after every model change).

        What ``sigmoid-train fleet`` reads: who this node is, what it runs, where it listens.
        """
        cfg = self.cfg
        self.link.publish(cfg.info_topic, to_json({
            "node": cfg.node, "software": "sigmoid-edge", "software_version": __version__,
            "model": self.slot.current.identity, "runtime": self.slot.current.runtime,
            "started": round(self.stats.started, 3), "input_topic": cfg.input_topic,
            "output_topic": cfg.output_topic, "shard": cfg.shard or None,
            "metrics_port": cfg.metrics_port or None,
            "stats_interval": cfg.stats_interval, "push_enabled": self.updates.push_enabled,
            "time": round(time.time(), 3),
        }), qos=1, retain=True)

    def reload(self, origin: str = "SIGHUP") -> bool:
        """Reload the model file; on any failure the current model keeps serving.

        With trusted keys the file needs a valid ``MODEL.sig`` (see :mod:`edge.updates`).
        """
        outcome = self.updates.reload_file(origin)
        if outcome in ("accepted", "unchanged"):
            new = self.slot.current
            log.info("reloaded model %s %s (sha256 %s)", new.info.name, new.info.version,
                     new.sha256)
            return True
        return False

    # lifecycle
    def start(self, timeout: float = 10.0) -> None:
        """Serve metrics (if set), start the worker and connect.

        Raises
        ------
        OSError
            The metrics port cannot be bound (nothing else has started).
        edge.mqtt.MqttError
            The broker cannot be reached or refuses us.
        """
        if self.cfg.metrics_port:
            from edge.metrics import MetricsServer  # prometheus_client only when asked for

            self.metrics = MetricsServer(self, self.cfg.metrics_host, self.cfg.metrics_port)
            self.metrics.start()
        self.runner.start()
        self.updates.start()
        self.link.start(timeout)

    def publish_stats(self) -> None:
        snap = self.stats.snapshot()
        snap["node"] = self.cfg.node
        snap["model"] = self.slot.current.identity
        snap["runtime"] = self.slot.current.runtime
        snap["devices"] = len(self.runner.buffers) if self.runner.buffers is not None else 0
        link = self.link
        snap["connection"] = {"connects": link.connects, "outages": link.outages,
                              "reconnect_attempts": link.attempts,
                              "publish_refused": link.publish_refused,
                              "persistent_session": self._manual_ack,
                              "unacked": len(self._acks)}
        snap["model_updates"] = self.updates.snapshot()
        if self.journal is not None:
            snap["journal"] = {"bytes": self.journal.size, "commits": self.journal.commits,
                               "compactions": self.journal.compactions}
        # Rates over the last interval, so one (retained) stats message says how busy we are.
        now, stats = time.monotonic(), self.stats
        began, messages, windows = self._rate_basis
        span = max(now - began, 1e-3)
        snap["rates"] = {"messages_per_s": round((stats.messages_in - messages) / span, 2),
                         "windows_per_s": round((stats.windows - windows) / span, 2)}
        self._rate_basis = (now, stats.messages_in, stats.windows)
        snap["time"] = round(time.time(), 3)
        # Retained: `sigmoid-train fleet status` sees every node's latest stats at once.
        self.link.publish(self.cfg.stats_topic, to_json(snap), qos=1, retain=True)

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; SIGHUP reloads the model. Returns the exit code."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
            signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
            signal.signal(signal.SIGHUP, lambda *_: self.reload_event.set())
        self.start()
        m = self.slot.current.info
        log.info("serving %s %s with the %s runtime: %d channels %s, window %d, hop %d, "
                 "labels %s; input %s -> %s", m.name, m.version, self.slot.current.runtime,
                 len(m.channels), list(m.channels), m.window, self.runner.buffers.hop,
                 list(m.labels), self.filter, self.cfg.output_topic)
        if self._shard is not None:
            log.info("shard %s: keeping the devices whose crc32(name) mod %d is %d",
                     self.cfg.shard, self._shard[1], self._shard[0])
        next_stats = time.monotonic() + self.cfg.stats_interval
        next_drop_log, drops_logged = 0.0, 0
        while not self.stop_event.wait(TICK):
            if self.reload_event.is_set():  # loaded and checked on the update thread
                self.reload_event.clear()
                self.updates.request_reload("SIGHUP")
            now = time.monotonic()
            if self.stats.drops > drops_logged and now >= next_drop_log:
                log.warning("queue full: dropped %d oldest messages (total %d); the worker "
                            "cannot keep up", self.stats.drops - drops_logged, self.stats.drops)
                drops_logged, next_drop_log = self.stats.drops, now + DROP_LOG_INTERVAL
            if now >= next_stats:
                next_stats = now + self.cfg.stats_interval
                self.publish_stats()
            if not self.runner.alive:
                log.error("the worker thread stopped; exiting")
                break
        self.stop()
        return 0

    def stop(self, timeout: float = 3.0) -> None:
        """Stop taking input, finish the batch, publish ``offline``, disconnect."""
        log.info("stopping: finishing the current batch")
        self._accepting = False
        if self.ha is not None:
            self.ha.close()
        self.runner.stop(timeout)
        self.updates.stop()
        if self._manual_ack:
            self.flush_acks()  # what is still queued stays unacknowledged: sent again later
        if self.journal is not None:
            self.journal.close()
        self.publish_stats()
        self.link.stop(timeout)
        if self.metrics is not None:
            self.metrics.stop()
        log.info("stopped")
