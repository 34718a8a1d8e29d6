"""Staying up: broker restarts, daemon restarts without loss, overload, bad credentials.

All against a real mosquitto; reconnect delays are shortened so the suite stays fast.
"""

from __future__ import annotations

import json
import logging
import random
import time

import numpy as np
import pytest

from edge.daemon import Daemon
from edge.mqtt import Backoff
from tests.daemon_helpers import classifications, config, running, wait_for
from tests.models import mean_model
from tests.mqtt_helpers import Collector, mosquitto_pub

OUT = "edge/+/classification"
FAST = {"reconnect_min": 0.05, "reconnect_max": 0.4, "auth_retry": 1.5}


@pytest.fixture
def model(tmp_path):
    # Four samples per window and no overlap: N windows are exactly 4N samples.
    return mean_model(tmp_path / "model.onnx", window=4, hop=4)


def lines(n_windows: int, value: float = 2.0) -> str:
    return "\n".join([json.dumps({"x": value, "y": value, "z": value})] * (4 * n_windows))


def test_backoff_doubles_with_jitter_and_resets():
    b = Backoff(0.5, 4.0, rng=random.Random(1))
    delays = [b.next() for _ in range(6)]
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, caps, strict=True))
    assert len({round(d, 6) for d in delays[3:]}) == 3  # jittered, not lock-step
    b.reset()
    assert b.next() <= 0.5


def test_broker_killed_and_restarted_classifications_resume(broker, model, caplog):
    caplog.set_level(logging.INFO, logger="edge.mqtt")
    with running(broker, model, **FAST) as daemon:
        with Collector(broker, OUT) as out:
            mosquitto_pub(broker, "sensors/k1/a", lines(2), lines=True, qos=1)
            assert len(classifications(out, 2)) == 2
        broker.kill()  # a crash: no clean disconnect
        wait_for(lambda: not daemon.link.connected.is_set(), what="the daemon to notice")
        time.sleep(1.0)  # several reconnect attempts fail while the broker is down
        broker.start()  # same port
        assert daemon.link.subscribed.wait(10), "daemon did not re-subscribe"
        with Collector(broker, OUT) as out:
            mosquitto_pub(broker, "sensors/k1/a", lines(3, 0.0), lines=True, qos=1)
            docs = classifications(out, 3)
        assert [d["label"] for d in docs] == ["low"] * 3
        link = daemon.link
        assert link.connects == 2 and link.outages == 1 and link.attempts >= 3
    lost = [r for r in caplog.records if "lost the connection" in r.message]
    assert len(lost) == 1, "one log line per outage, not one per retry"
    assert sum("reconnected to" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_daemon_restart_loses_nothing_with_a_persistent_session(broker, model, version):
    settings = dict(client_id="edge-persist", qos=1, mqtt_version=version, **FAST)
    with running(broker, model, **settings) as daemon:
        assert daemon.link.session_present is False
    # The daemon is down: the broker keeps its session and queues QoS 1 input for it.
    n = 40
    mosquitto_pub(broker, "sensors/p1/a", lines(n, 0.0), lines=True, qos=1)
    with Collector(broker, OUT) as out:
        with running(broker, model, **settings) as daemon:
            docs = classifications(out, n, timeout=20)
            assert daemon.link.session_present is True
            wait_for(lambda: not daemon._acks, what="every message acknowledged")
    assert len(docs) == n and {d["label"] for d in docs} == {"low"}


def test_a_crash_before_the_worker_took_a_message_loses_nothing(broker, model):
    settings = dict(client_id="edge-crash", qos=1, **FAST)
    with running(broker, model, **settings):
        pass  # create the persistent session
    first = Daemon(config(broker, model, **settings))
    first.link.start()  # network thread only: the worker never takes anything
    n = 5
    mosquitto_pub(broker, "sensors/c1/a", lines(n, 0.0), lines=True, qos=1)
    # mosquitto sends at most 20 unacknowledged messages to a client at a time.
    wait_for(lambda: first.stats.messages_in == 20, what="messages in flight")
    assert len(first._acks) == 20  # received, none acknowledged
    # Crash: the socket dies without a DISCONNECT, nothing more is acknowledged.
    first.link._stop.set()
    first.link.client.loop_stop()
    first.link.client.socket().close()
    with Collector(broker, OUT) as out, running(broker, model, **settings) as second:
        docs = classifications(out, n, timeout=20)
        assert second.link.session_present is True
    assert len(docs) == n


def test_overload_at_qos0_is_bounded_and_counted(broker, model):
    daemon = Daemon(config(broker, model, qos=0, queue_size=50))
    daemon.link.start()  # the worker is stalled: everything beyond the queue must drop
    assert daemon.link.subscribed.wait(5)
    try:
        n = 2000
        mosquitto_pub(broker, "sensors/o1/a", "\n".join(["[0, 0, 0]"] * n), lines=True)
        wait_for(lambda: daemon.stats.messages_in == n, what="all messages received")
        assert len(daemon.runner.queue) == 50
        assert daemon.stats.drops == n - 50
        with Collector(broker, OUT, "sigmoid-edge/+/stats") as out:
            daemon.runner.start()
            wait_for(lambda: daemon.stats.classifications == 50 // 4)
            daemon.publish_stats()
            snap = next(json.loads(m.payload) for m in out.take(50 // 4 + 1)
                        if m.topic.endswith("/stats"))
    finally:
        daemon.stop()
    assert snap["drops"] == n - 50 and snap["queue_depth"] == 0
    assert snap["samples"] == 50 and snap["messages_in"] == n


def test_unacknowledged_outputs_are_bounded_while_the_broker_is_stalled(broker, model, caplog):
    # A frozen broker (SIGSTOP) acknowledges nothing: QoS 1 classifications would pile up in
    # memory for as long as it lasts. Beyond max_pending_outputs they are counted, not kept;
    # the kept ones are delivered once the broker is back.
    import signal

    caplog.set_level(logging.WARNING, logger="edge.runner")
    with running(broker, model, max_pending_outputs=3) as daemon, \
            Collector(broker, OUT) as out:
        wait_for(lambda: daemon.link.pending() == 0, what="`online` acknowledged")
        broker.proc.send_signal(signal.SIGSTOP)
        try:
            window = np.zeros((4, 3), np.float32)
            for i in range(10):  # ten devices, one window each, straight to the worker
                daemon.runner.submit(f"s{i}", window, float(i), time.time())
            wait_for(lambda: daemon.stats.classifications == 10, what="10 classifications")
            wait_for(lambda: "classifications not published" in caplog.text, what="a warning")
            snap = daemon.stats.snapshot()  # what the stats topic carries
            assert (snap["pending_outputs"], snap["published"], snap["output_drops"]) == (3, 3, 7)
        finally:
            broker.proc.send_signal(signal.SIGCONT)
        docs = classifications(out, 3)
        wait_for(lambda: daemon.link.pending() == 0, what="the three acknowledged")
    assert sorted(d["device"] for d in docs) == ["s0", "s1", "s2"]
    assert "3 are still waiting for the broker" in caplog.text
    assert caplog.text.count("classifications not published") == 1  # rate-limited


def test_bad_credentials_retry_slowly_with_one_clear_error(make_secure_broker, model, caplog):
    from tests.tls_helpers import make_password_file

    sb = make_secure_broker(users={"daemon": "right"})
    caplog.set_level(logging.INFO, logger="edge.mqtt")
    settings = dict(username="daemon", password_file=str(sb.password_file_for("daemon")),
                    tls_ca=str(sb.tls.ca_cert), **FAST)
    cfg = config(sb.broker, model, **settings)
    assert cfg.password == "right"
    daemon = Daemon(cfg)
    daemon.start()
    try:
        assert daemon.link.subscribed.wait(5)
        # The broker's password changes under the daemon (a rotated secret).
        make_password_file(sb.password_file, {"daemon": "rotated"})
        sb.broker.restart()
        wait_for(lambda: daemon.link.refused is not None, what="the refusal")
        attempts = daemon.link.attempts
        time.sleep(2.5)
        # With the 0.05-0.4 s backoff a lost connection is retried ~8 times in 2.5 s; a
        # refused login only every auth_retry (1.5 s +- 10 %).
        assert daemon.link.attempts - attempts <= 2
        refusals = [r for r in caplog.records if "refused the connection" in r.message]
        assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR
        assert "wrong user name or password" in refusals[0].message
        # Fixed on the broker: the daemon comes back by itself.
        make_password_file(sb.password_file, {"daemon": "right"})
        sb.broker.restart()
        assert daemon.link.subscribed.wait(10)
    finally:
        daemon.stop()


def test_sigmoid_edge_run_process_restart_loses_nothing(broker, model, tmp_path):
    import signal

    from tests.daemon_helpers import DaemonProcess

    args = ("--client-id", "edge-proc", "--qos", "1")
    with Collector(broker, "sigmoid-edge/testnode/status", OUT) as out:
        with DaemonProcess(broker, model, tmp_path, *args) as d:
            wait_for(lambda: "connected to" in d.log(), what="the first start")
            d.signal(signal.SIGTERM)
            assert d.wait(15) == 0
        n = 30
        mosquitto_pub(broker, "sensors/pp/a", lines(n, 0.0), lines=True, qos=1)
        with DaemonProcess(broker, model, tmp_path, *args):
            docs: list[dict] = []
            deadline = time.monotonic() + 30
            while len(docs) < n:
                m = out.get(timeout=max(0.01, deadline - time.monotonic()))
                if m.topic.startswith("edge/"):
                    docs.append(json.loads(m.payload))
    assert len(docs) == n and {doc["device"] for doc in docs} == {"pp"}


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_a_huge_publish_never_reaches_the_daemon_under_mqtt5(broker, model, version):
    with running(broker, model, mqtt_version=version) as daemon, Collector(broker, OUT) as out:
        huge = b"[" + b"1, " * 700_000 + b"1]"  # 2.1 MB, over 2 x max_payload_bytes + 64 KiB
        publish = out.client.publish
        publish("sensors/h1/a", huge, qos=1).wait_for_publish(10)
        for _ in range(4):
            publish("sensors/h1/a", "[0, 0, 0]", qos=1).wait_for_publish(5)
        assert classifications(out, 1)[0]["label"] == "low"
        wait_for(lambda: daemon.stats.messages_in >= 4)
        counts = (daemon.stats.messages_in, dict(daemon.stats.rejected))
    if version == "5":  # the broker honours our Maximum Packet Size and drops it
        assert counts == (4, {})
    else:  # 3.1.1 has no such limit: it arrives whole and is refused (mosquitto's
        assert counts == (5, {"too_large": 1})  # message_size_limit is the remedy)
