"""A fleet of three real daemons on one real mosquitto: metrics, health, status, staged push.

The three ``sigmoid-edge run`` processes start once for the module (nodes ``a``, ``b``,
``c``; ``--metrics-port``, ``--trusted-key``, stats every 0.5 s, an identity channel mapping
``x, y, z``) and every test talks to them only the way a user would: HTTP to ``/metrics`` and
``/healthz``, ``sigmoid-train fleet`` on the command line, MQTT. The tests run in file order:
the staged pushes change the models, and the last test stops the broker.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from itertools import pairwise
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.config import ConfigError, load_config
from edge.stats import Histogram
from tests.daemon_helpers import ROOT, DaemonProcess, wait_for
from tests.models import mean_model
from tests.mqtt_helpers import Broker, Collector, free_port, mosquitto_pub
from trainer.fleet import FleetPush, FleetWatcher, Node, format_table, plan_waves, status_rows
from trainer.signing import keygen, sign_file

NODES = ("a", "b", "c")
DASHBOARD = ROOT / "deploy" / "monitoring" / "grafana" / "dashboards" / "sigmoid-edge.json"
ALERTS = ROOT / "deploy" / "monitoring" / "alerts.yml"


# ---------------------------------------------------------------------------- pure logic

def test_waves_start_with_the_canaries_and_double():
    assert plan_waves(["a", "b", "c"], 1) == [["a"], ["b", "c"]]
    assert plan_waves(list("abcdefg"), 2) == [["a", "b"], ["c", "d", "e", "f"], ["g"]]
    assert plan_waves([], 1) == []
    with pytest.raises(ValueError, match="canary"):
        plan_waves(["a"], 0)


def test_status_rows_and_table_from_retained_messages():
    now = 1_000_000.0
    up = Node("pi-2", info={"model": {"name": "m", "version": "3", "sha256": "ab" * 32},
                            "started": now - 3725, "time": now - 20, "metrics_port": 9820,
                            "software_version": "0.1.0", "input_topic": "sensors/{device}/#"},
              status="online",
              stats={"rates": {"messages_per_s": 12.5, "windows_per_s": 0.4}, "time": now - 4,
                     "rejected_total": 3, "drops": 1, "output_drops": 0, "model_rejects": 1})
    down = Node("pi-1", info={"model": {"name": "m", "version": "2", "sha256": "cd" * 32},
                              "started": now - 99, "time": now - 600}, status="offline")
    rows = status_rows({"pi-2": up, "pi-1": down}, now=now)
    assert [r["node"] for r in rows] == ["pi-1", "pi-2"]
    assert rows[0]["state"] == "offline" and rows[0]["uptime_s"] is None
    assert rows[0]["errors"] is None and rows[0]["last_seen"] == now - 600
    assert rows[1]["uptime_s"] == 3725 and rows[1]["messages_per_s"] == 12.5
    assert rows[1]["errors"] == {"rejected": 3, "queue_drops": 1, "output_drops": 0,
                                 "model_rejects": 1}
    table = format_table(rows, now=now).splitlines()
    assert table[0].split() == ["NODE", "STATE", "MODEL", "UPTIME", "MSG/S", "WIN/S", "ERRORS",
                                "LAST", "SEEN"]
    assert table[1].split() == ["pi-1", "offline", "m", "2", "cd" * 6, "-", "-", "-", "-",
                                "10m00s", "ago"]
    assert table[2].split() == ["pi-2", "online", "m", "3", "ab" * 6, "1h02m", "12.5", "0.4",
                                "5", "4s", "ago"]


def watcher_of(*nodes: Node) -> FleetWatcher:
    """A FleetWatcher over given nodes, without a broker (the soak's logic alone)."""
    w = FleetWatcher.__new__(FleetWatcher)
    w.nodes, w.cond = {n.name: n for n in nodes}, threading.Condition()
    return w


def test_the_soak_halts_on_a_rollback_and_names_its_event():
    new, old = {"name": "m", "version": "2", "sha256": "n" * 64}, {"sha256": "o" * 64}
    node = Node("a", info={"model": new, "stats_interval": 0.1}, status="online")
    w = watcher_of(node)
    push = FleetPush(w, b"", new["sha256"], soak=5.0, max_error_rate=0.01, say=lambda _: None)
    accepted = time.monotonic()

    def rollback():  # as the daemon does it: info first, then the errors event
        time.sleep(0.1)
        with w.cond:
            node.info = {"model": old}
            w.cond.notify_all()
        time.sleep(0.1)
        with w.cond:
            node.events.append((time.monotonic(), {"event": "model_rolled_back", "failed": new,
                                                   "detail": "non-finite probabilities"}))
            w.cond.notify_all()

    threading.Thread(target=rollback).start()
    failure = push._soaked("a", accepted, {})
    assert time.monotonic() - accepted < 3  # halted at once, not after the 5 s soak
    assert failure.reason == "rolled the model back: non-finite probabilities"
    assert failure.event["event"] == "model_rolled_back"


def test_the_soak_judges_inferences_and_the_error_rate_between_two_stats():
    sha = "n" * 64
    push = FleetPush(watcher_of(), b"", sha, soak=1.0, max_error_rate=0.05, say=lambda _: None)
    before = {"inferences": 10, "messages_in": 1000, "rejected_total": 5, "drops": 0,
              "not_mine": 0}
    after = {**before, "model": {"sha256": sha}, "inferences": 30, "messages_in": 1200,
             "rejected_total": 15, "rejected": {"missing_channel": 15}}
    assert push._judge("a", before, after) is None  # 10 of 200 = 5%
    high = push._judge("a", before, {**after, "drops": 1})
    assert high.reason.startswith("error rate 5.5% over the soak (11 of 200 messages")
    assert "missing_channel" in high.reason
    idle = push._judge("a", before, {**after, "inferences": 10})
    assert idle.reason.startswith("made no inferences during the 1 s soak")
    # --shard: the other shards' messages are not this node's input.
    sharded = push._judge("a", {**before, "not_mine": 0},
                          {**after, "messages_in": 2200, "not_mine": 1000})
    assert sharded is None
    assert push._judge("a", before, {**after, "model": {"sha256": "o" * 64}}).reason == \
        "its stats after the soak are not from the new model"


def test_histogram_buckets_are_cumulative_and_inclusive():
    h = Histogram((0.01, 0.1))
    for v in (0.005, 0.01, 0.05, 3.0):
        h.observe(v)
    assert h.cumulative() == [(0.01, 2), (0.1, 3), (float("inf"), 4)]
    assert h.count == 4 and h.sum == pytest.approx(3.065)


@pytest.mark.parametrize("n", [3, 200])  # a loop for a few values, numpy for many
def test_histogram_batches_count_like_single_observations(n):
    values = [0.01, 0.1, 0.0, 5.0] + [i / n for i in range(n)]
    one, batch = Histogram((0.01, 0.1, 1.0)), Histogram((0.01, 0.1, 1.0))
    for v in values:
        one.observe(v)
    batch.observe_many(values[:2])
    batch.observe_many(values[2:])
    assert batch.cumulative() == one.cumulative()
    assert (batch.count, batch.sum) == (one.count, pytest.approx(one.sum))


def test_metrics_settings_are_checked_and_off_by_default(tmp_path):
    model = mean_model(tmp_path / "m.onnx")
    base = {"model": str(model), "node": "n"}
    assert load_config(base, env={}).metrics_port == 0
    cfg = load_config(base, env={"SIGMOID_EDGE_METRICS_PORT": "9820"})
    assert (cfg.metrics_port, cfg.metrics_host) == (9820, "127.0.0.1")
    with pytest.raises(ConfigError, match=r"metrics_port \(--metrics-port\): must be a TCP port"):
        load_config({**base, "metrics_port": 70000}, env={})
    with pytest.raises(ConfigError, match="metrics_host"):
        load_config({**base, "metrics_host": ""}, env={})
    # Without a metrics port the daemon never imports prometheus_client.
    probe = subprocess.run([sys.executable, "-c", "import sys, edge.cli, edge.daemon; "
                            "print('prometheus_client' in sys.modules)"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert probe.stdout.strip() == "False", probe.stderr


def test_a_busy_metrics_port_stops_the_daemon_before_it_connects(tmp_path):
    from edge.daemon import Daemon

    model = mean_model(tmp_path / "m.onnx")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = load_config({"model": str(model), "node": "n", "metrics_port": port,
                           "broker": "mqtt://127.0.0.1:1"}, env={})
        daemon = Daemon(cfg)
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{port}: .*"
                                          "choose another --metrics-port"):
            daemon.start()
    assert not daemon.runner.alive and not daemon.link.connected.is_set()


# ---------------------------------------------------------------------------- the fleet

class Fleet:
    def __init__(self, broker: Broker, root: Path, key: Path):
        self.broker, self.root, self.key = broker, root, key
        self.v1 = mean_model(root / "v1.onnx", window=4, hop=4, version="1")
        self.v1_sha = hashlib.sha256(self.v1.read_bytes()).hexdigest()
        self.ports = {n: free_port() for n in NODES}
        self.procs: dict[str, DaemonProcess] = {}

    def start(self) -> None:
        pub = self.key.with_name("signing.pub")
        env = {"SIGMOID_EDGE_CHANNELS": "x=x,y=y,z=z", "SIGMOID_EDGE_RECONNECT_MIN": "0.2",
               "SIGMOID_EDGE_RECONNECT_MAX": "0.5"}
        for n in NODES:  # each node stores accepted pushes in its own model file
            model = self.root / n / "model.onnx"
            model.parent.mkdir()
            shutil.copy(self.v1, model)
            sign_file(model, self.key)
            self.procs[n] = DaemonProcess(
                self.broker, model, self.root / n, "--trusted-key", str(pub),
                "--metrics-port", str(self.ports[n]), "--stats-interval", "0.5",
                env=env, node=n)
        with Collector(self.broker, "sigmoid-edge/+/info") as infos:
            seen = {json.loads(m.payload)["node"] for m in infos.take(3, timeout=60)}
        assert seen == set(NODES)

    def url(self, node: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[node]}{path}"

    def close(self) -> None:
        for p in self.procs.values():
            p.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    key = keygen(root / "keys").private_path
    broker = Broker(root / "broker").start()
    f = Fleet(broker, root, key)
    try:
        f.start()
        yield f
    finally:
        f.close()
        broker.stop()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(fleet: Fleet, node: str) -> dict:
    """``{(sample name, frozenset of labels): value}``, parsed by prometheus_client."""
    status, text = get(fleet.url(node, "/metrics"))
    assert status == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, metric: str, /, **labels) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env={"PYTHONPATH": str(ROOT),
                                                                     "PATH": "/usr/bin:/bin"})


def infos(fleet: Fleet) -> dict[str, dict]:
    with Collector(fleet.broker, "sigmoid-edge/+/info") as c:
        return {d["node"]: d for d in (json.loads(m.payload) for m in c.take(3))}


@pytest.mark.slow
def test_metrics_count_the_traffic_sent(fleet):
    before = scrape(fleet, "a")
    t0 = time.time() - 2.0  # samples taken 2 s ago: an input lag of about 2 s
    good = "\n".join(json.dumps({"x": 0.1, "y": 0.1, "z": 0.1, "ts": t0 + i / 100})
                     for i in range(40))
    mosquitto_pub(fleet.broker, "sensors/m1/acc", good, qos=1, lines=True)
    mosquitto_pub(fleet.broker, "sensors/m2/acc", "{not json\n[1, 2\n[1, 2]", qos=1, lines=True)

    def delta(samples, metric, /, **labels):
        return value(samples, metric, **labels) - value(before, metric, **labels)

    wait_for(lambda: delta(scrape(fleet, "a"), "sigmoid_edge_windows_total") >= 10,
             what="10 windows counted")
    after = scrape(fleet, "a")
    assert delta(after, "sigmoid_edge_messages_received_total") == 43
    assert delta(after, "sigmoid_edge_messages_rejected_total", reason="invalid_json") == 2
    assert delta(after, "sigmoid_edge_messages_rejected_total", reason="wrong_width") == 1
    assert delta(after, "sigmoid_edge_samples_total") == 40
    assert delta(after, "sigmoid_edge_windows_total") == 10
    assert delta(after, "sigmoid_edge_classifications_total", label="low") == 10
    assert delta(after, "sigmoid_edge_classifications_published_total") == 10
    inferences = delta(after, "sigmoid_edge_inferences_total")
    assert 1 <= inferences <= 10
    count = delta(after, "sigmoid_edge_inference_duration_seconds_count")
    assert count == inferences
    assert value(after, "sigmoid_edge_inference_duration_seconds_bucket", le="+Inf") == \
        value(after, "sigmoid_edge_inference_duration_seconds_count")
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in after.items()
                     if name == "sigmoid_edge_classification_latency_seconds_bucket")
    assert len(buckets) > 5 and all(a[1] <= b[1] for a, b in pairwise(buckets))
    assert buckets[-1][1] >= 1
    assert value(after, "sigmoid_edge_model_info", name="test-mean", version="1",
                 sha256=fleet.v1_sha) == 1
    assert value(after, "sigmoid_edge_mqtt_connected") == 1
    assert value(after, "sigmoid_edge_devices") >= 1
    assert 10e6 < value(after, "sigmoid_edge_resident_memory_bytes") < 1e9
    assert value(after, "sigmoid_edge_model_updates_total", outcome="accepted") == 0
    assert 1.5 < value(after, "sigmoid_edge_input_lag_seconds", quantile="0.5") < 60
    assert after[("sigmoid_edge_captures_total", frozenset())] == 0  # --capture is off
    # Every metric the Grafana dashboard and the alert rules query is one the daemon exports.
    exported = set(re.findall(r"sigmoid_edge_\w+", get(fleet.url("a", "/metrics"))[1]))
    queried = set(re.findall(r"sigmoid_edge_\w+", DASHBOARD.read_text() + ALERTS.read_text()))
    assert len(queried) > 20 and queried <= exported, queried - exported


@pytest.mark.slow
def test_fleet_status_lists_every_node_with_its_model(fleet):
    proc = cli("fleet", "status", "--broker", fleet.broker.url, "--json", "--wait", "1")
    assert proc.returncode == 0, proc.stderr
    rows = {r["node"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == set(NODES)
    for n, row in rows.items():
        assert row["state"] == "online" and row["model"]["sha256"] == fleet.v1_sha
        assert row["metrics_port"] == fleet.ports[n] and row["uptime_s"] > 0
        assert row["messages_per_s"] is not None and row["errors"]["rejected"] >= 0
    table = cli("fleet", "status", "--broker", fleet.broker.url, "--wait", "0.5")
    lines = table.stdout.splitlines()
    assert lines[0].startswith("NODE") and [ln.split()[:2] for ln in lines[1:]] == \
        [[n, "online"] for n in NODES]
    # A rollout to a node that never published its info pushes nothing at all.
    ghost = cli("fleet", "push", str(fleet.v1), "--broker", fleet.broker.url, "--key",
                str(fleet.key), "--nodes", "b,ghost", "--soak", "0")
    assert ghost.returncode == 1 and "nothing was pushed: ghost: no info published" in \
        ghost.stderr, ghost.stderr


@pytest.mark.slow
def test_a_model_the_canary_refuses_halts_before_the_other_nodes(fleet):
    bad = mean_model(fleet.root / "bad.onnx", window=4, hop=4, version="bad",
                     channels=("p", "q", "r"))  # the nodes map x, y, z: refused
    plan = cli("fleet", "push", str(bad), "--broker", fleet.broker.url, "--key",
               str(fleet.key), "--all", "--dry-run", "--canary", "1")
    assert plan.returncode == 0, plan.stderr
    assert "wave 1/2 (canary): a" in plan.stdout and "wave 2/2: b, c" in plan.stdout
    assert "dry run: nothing was pushed" in plan.stdout

    proc = cli("fleet", "push", str(bad), "--broker", fleet.broker.url, "--key", str(fleet.key),
               "--nodes", "a,b,c", "--canary", "1", "--soak", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "HALTED: a refused the model: invalid_model" in out, out
    event = json.loads(re.search(r"its errors event: (\{.*\})", out).group(1))
    assert event["event"] == "model_rejected" and event["serving"]["sha256"] == fleet.v1_sha
    assert "on the new model: none" in out
    assert re.search(r"on the old model: a \(test-mean 1, sha256 \w{12}\), b .*, c ", out), out
    assert "pushing to b" not in out
    shas = {n: d["model"]["sha256"] for n, d in infos(fleet).items()}
    assert shas == dict.fromkeys(NODES, fleet.v1_sha)
    for n in ("b", "c"):  # never pushed: no update of any outcome
        samples = scrape(fleet, n)
        assert sum(v for (name, _), v in samples.items()
                   if name == "sigmoid_edge_model_updates_total") == 0
    assert value(scrape(fleet, "a"), "sigmoid_edge_model_updates_total",
                 outcome="rejected") == 1


@pytest.mark.slow
def test_a_good_model_reaches_every_node_in_waves(fleet):
    good = mean_model(fleet.root / "v2.onnx", window=4, hop=4, version="2")
    v2 = hashlib.sha256(good.read_bytes()).hexdigest()
    stop = threading.Event()

    def traffic():  # inferences must flow during the soak
        with Collector(fleet.broker) as pub:
            while not stop.is_set():
                for _ in range(4):
                    pub.client.publish("sensors/g1/acc", '{"x": 1, "y": 1, "z": 1}', qos=0)
                time.sleep(0.02)

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        proc = cli("fleet", "push", str(good), "--broker", fleet.broker.url, "--key",
                   str(fleet.key), "--nodes", "a,b,c", "--canary", "1", "--soak", "1",
                   "--max-error-rate", "0.01")
    finally:
        stop.set()
        t.join()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "wave 1/2: pushing to a" in out and "wave 2/2: pushing to b, c" in out
    assert re.search(r"a: \d+ inferences, error rate 0.0% over the soak", out), out
    assert f"done: all 3 node(s) serve sha256 {v2[:12]}" in out
    assert {n: d["model"]["sha256"] for n, d in infos(fleet).items()} == dict.fromkeys(NODES, v2)
    assert value(scrape(fleet, "c"), "sigmoid_edge_model_info", name="test-mean", version="2",
                 sha256=v2) == 1


@pytest.mark.slow
def test_healthz_flips_to_503_while_the_broker_is_down(fleet):
    assert get(fleet.url("b", "/healthz")) == (200, f"ok: connected to {fleet.broker.url}, "
                                                    "worker alive\n")
    fleet.broker.stop()
    try:
        wait_for(lambda: get(fleet.url("b", "/healthz"))[0] == 503, what="503 from /healthz")
        code, reason = get(fleet.url("b", "/healthz"))
        assert code == 503 and reason.startswith(f"not connected to the broker at "
                                                 f"{fleet.broker.url}")
        assert reason.count("\n") == 1
        assert value(scrape(fleet, "b"), "sigmoid_edge_mqtt_connected") == 0
    finally:
        fleet.broker.start()
    wait_for(lambda: get(fleet.url("b", "/healthz"))[0] == 200, timeout=20,
             what="200 again after the broker came back")
    assert value(scrape(fleet, "b"), "sigmoid_edge_mqtt_outages_total") == 1
    # The broker kept nothing (no persistence): each daemon publishes its info on connect.
    assert set(infos(fleet)) == set(NODES)
