"""Prometheus ``/metrics`` and ``/healthz`` for a running daemon (``--metrics-port``).

Imported only when a metrics port is set, so a daemon without one never loads
``prometheus_client``. Nothing here runs on the data path: :class:`DaemonCollector` reads the
daemon's existing counters (:class:`edge.stats.Stats`, the MQTT link, the model updates) when
Prometheus scrapes, and the two histograms are the lock-free ones the worker already keeps
(:class:`edge.stats.Histogram`). The HTTP server is the standard library's, on its own threads.

Every name starts with ``sigmoid_edge_``; counters end in ``_total``, durations are seconds,
memory is bytes (https://prometheus.io/docs/practices/naming/).
"""

from __future__ import annotations

import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from edge import __version__
from edge.stats import Histogram

try:
    import resource
except ImportError:  # not Unix
    resource = None

log = logging.getLogger(__name__)

PREFIX = "sigmoid_edge_"


def health(daemon) -> tuple[bool, str]:
    """Whether ``daemon`` serves: connected to the broker and its worker thread alive.

    Returns
    -------
    ok : bool
    reason : str
        One line: what is wrong, or what is right.
    """
    link = daemon.link
    if not daemon.runner.alive:
        return False, "the worker thread has stopped; the daemon is exiting"
    if not link.connected.is_set():
        why = f": {link.refused}" if link.refused else "; reconnecting"
        return False, f"not connected to the broker at {link.address.url}{why}"
    return True, f"ok: connected to {link.address.url}, worker alive"


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    buckets = [("+Inf" if le == float("inf") else repr(le), n) for le, n in hist.cumulative()]
    # `count` must equal the +Inf bucket; read from the same snapshot of the bucket counts.
    return HistogramMetricFamily(PREFIX + name, doc, buckets=buckets, sum_value=hist.sum)


def _labelled(name: str, doc: str, label: str, values: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, doc, labels=[label])
    for key, value in sorted(dict(values).items()):
        family.add_metric([str(key)], value)
    return family


class DaemonCollector(Collector):
    """Reads a :class:`edge.daemon.Daemon`'s counters at scrape time.

    Parameters
    ----------
    daemon : edge.daemon.Daemon
        Its ``cfg``, ``stats``, ``link``, ``runner``, ``slot`` and ``updates`` are read.
    """

    def __init__(self, daemon):
        self.daemon = daemon
        self.process = ProcessMetrics()

    def collect(self):
        d = self.daemon
        s, link, updates = d.stats, d.link, d.updates

        def counter(name, doc, value):
            return CounterMetricFamily(PREFIX + name, doc, value=value)

        def gauge(name, doc, value):
            return GaugeMetricFamily(PREFIX + name, doc, value=value)

        yield InfoMetricFamily(PREFIX + "build", "sigmoid-edge software version and node name",
                               value={"version": __version__, "node": d.cfg.node})
        model = d.slot.current
        yield InfoMetricFamily(PREFIX + "model", "The model serving now",
                               value={k: str(v) for k, v in model.identity.items()})
        yield gauge("start_time_seconds", "Daemon start, seconds since the epoch", s.started)
        yield counter("messages_received", "Messages received on the input topic", s.messages_in)
        yield counter("messages_not_mine", "--shard: messages of devices another daemon owns",
                      s.not_mine)
        yield _labelled("messages_rejected", "Input messages rejected, by reason", "reason",
                        s.rejected)
        yield counter("samples", "Sensor samples buffered", s.samples)
        yield counter("windows", "Windows completed", s.windows)
        yield counter("inferences", "Model calls (one per batch of windows)", s.inferences)
        yield _labelled("classifications", "Windows classified, by label (uncertain below "
                        "min_confidence)", "label", s.labels)
        yield counter("classifications_published", "Classifications published (after "
                      "on_change and only_anomalies)", s.published)
        yield counter("anomalies", "Windows whose anomaly score is above the model's "
                      "threshold", s.anomalous_windows)
        yield counter("anomaly_alarms", "Anomaly alarms raised (a device's alarm turning on)",
                      s.anomaly_alarms)
        yield _labelled("window_rejects", "Windows the model gave no usable output for, by "
                        "reason", "reason", s.window_rejects)
        yield gauge("queue_depth", "Messages waiting for the worker", s.queue_depth())
        yield gauge("queue_capacity", "Bound of the worker's queue (queue_size)",
                    d.cfg.queue_size)
        yield counter("queue_drops", "Messages dropped because the worker's queue was full",
                      s.drops)
        yield gauge("pending_outputs", "QoS > 0 messages not yet acknowledged by the broker",
                    s.pending_outputs())
        yield counter("output_drops", "Classifications not published because "
                      "max_pending_outputs were waiting for the broker", s.output_drops)
        yield counter("window_gaps", "Windows restarted by a gap in the samples' time", s.gaps)
        yield counter("device_evictions", "Devices forgotten beyond max_devices", s.evictions)
        yield counter("interleaved_devices", "Shared subscription: devices seen arriving with "
                      "holes (their messages split between daemons)", s.interleaved_devices)
        yield counter("captures", "Windows captured for labelling (--capture)", s.captures)
        yield counter("captures_limited", "Captures skipped by the per-device rate limit",
                      s.captures_limited)
        yield counter("capture_drops", "Captures not published because max_pending_outputs "
                      "were waiting for the broker", s.capture_drops)
        lag = GaugeMetricFamily(PREFIX + "input_lag_seconds", "Now minus the samples' own "
                                "time (ts) when they were taken in, recent p50 and p99: a broker "
                                "backlog shows here", labels=["quantile"])
        for q, ms in zip(("0.5", "0.99"), s.latency_ms(s.input_lags).values(), strict=True):
            if ms is not None:
                lag.add_metric([q], ms / 1000.0)
        yield lag
        buffers = d.runner.buffers
        yield gauge("devices", "Devices with a window buffer", len(buffers) if buffers else 0)
        yield _histogram("inference_duration_seconds", "Seconds per model call",
                         s.inference_seconds)
        yield _histogram("classification_latency_seconds", "Seconds from the message that "
                         "completed a window arriving to its classification being published",
                         s.latency_seconds)
        yield gauge("mqtt_connected", "1 while connected to the broker",
                    1 if link.connected.is_set() else 0)
        yield counter("mqtt_connects", "Successful connections to the broker", link.connects)
        yield counter("mqtt_outages", "Connections lost", link.outages)
        yield counter("mqtt_reconnect_attempts", "Reconnection attempts", link.attempts)
        yield counter("mqtt_publish_refused", "Publishes the broker refused (MQTT 5 PUBACK)",
                      link.publish_refused)
        outcomes = {k: updates.counts[k] for k in ("accepted", "unchanged", "rolled_back")}
        outcomes["rejected"] = sum(updates.rejected.values())
        yield _labelled("model_updates", "Model pushes and reloads, by outcome", "outcome",
                        outcomes)
        yield _labelled("model_update_rejections", "Model updates refused, by cause", "cause",
                        updates.rejected)
        yield gauge("resident_memory_bytes", "Resident memory of the daemon",
                    self.process.resident())
        yield from self.process.collect()


class ProcessMetrics:
    """The standard ``process_*`` metrics, as ``prometheus_client``'s ProcessCollector names
    them, for less per scrape.

    ProcessCollector opens and parses ``/proc/self/stat`` and ``/proc/self/limits`` on every
    scrape; here the start time is read once, CPU time and the descriptor limit are system
    calls, and the one ``/proc/self/statm`` read serves the daemon's own resident-memory
    gauge too (:meth:`resident`, read first in a scrape).
    """

    def __init__(self):
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._memory = (0.0, 0.0)
        self.start = 0.0
        try:  # boot time + the process's start in clock ticks since boot (fixed)
            with open("/proc/stat", "rb") as f:
                boot = next(float(line.split()[1]) for line in f if line.startswith(b"btime "))
            with open("/proc/self/stat", "rb") as f:
                ticks = float(f.read().rsplit(b")", 1)[1].split()[19])
            self.start = boot + ticks / os.sysconf("SC_CLK_TCK")
        except (OSError, StopIteration, IndexError, ValueError):
            pass

    def resident(self) -> float:
        """Resident memory in bytes now (0 without ``/proc``); remembered for :meth:`collect`."""
        try:
            with open("/proc/self/statm", "rb") as f:
                size, rss = f.read().split()[:2]
            self._memory = (float(size) * self._page, float(rss) * self._page)
        except (OSError, ValueError):
            self._memory = (0.0, 0.0)
        return self._memory[1]

    def collect(self):
        times = os.times()
        yield CounterMetricFamily("process_cpu_seconds", "Total user and system CPU time spent "
                                  "in seconds.", value=times.user + times.system)
        size, rss = self._memory
        if rss:
            yield GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory size in "
                                    "bytes.", value=size)
            yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size in "
                                    "bytes.", value=rss)
        if self.start:
            yield GaugeMetricFamily("process_start_time_seconds", "Start time of the process "
                                    "since unix epoch in seconds.", value=self.start)
        try:
            yield GaugeMetricFamily("process_open_fds", "Number of open file descriptors.",
                                    value=len(os.listdir("/proc/self/fd")))
        except OSError:
            pass
        if resource is not None:
            yield GaugeMetricFamily("process_max_fds", "Maximum number of open file "
                                    "descriptors.",
                                    value=resource.getrlimit(resource.RLIMIT_NOFILE)[0])


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self):  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok, reason = health(self.server.edge_daemon)
            self._reply(200 if ok else 503, (reason + "\n").encode())
        elif path == "/":
            self._reply(200, b"sigmoid-edge: /metrics (Prometheus), /healthz\n")
        else:
            self._reply(404, b"not found: try /metrics or /healthz\n")

    def _reply(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # a scrape every few seconds is not news
        log.debug("metrics %s: " + format, self.client_address[0], *args)


class MetricsServer(ThreadingHTTPServer):
    """``/metrics`` and ``/healthz`` for ``daemon`` on ``host:port``, served from a thread.

    Parameters
    ----------
    daemon : edge.daemon.Daemon
    host : str
        Address to listen on (``127.0.0.1``: this machine only).
    port : int
        0 picks a free port (see :attr:`port`).

    Raises
    ------
    OSError
        When the address cannot be bound; the message names it and what to do.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, daemon, host: str = "127.0.0.1", port: int = 0):
        self.edge_daemon = daemon
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DaemonCollector(daemon))
        try:
            super().__init__((host, port), _Handler)
        except OSError as e:
            raise OSError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}; choose "
                          "another --metrics-port (or metrics_host)") from None
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="sigmoid-edge-metrics", daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("serving /metrics and /healthz on http://%s:%d", self.server_address[0],
                 self.port)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.shutdown()
        self.server_close()
