"""``sigmoid-edge run`` as a real process: last will, signals, reload, command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.daemon_helpers import ROOT, DaemonProcess
from tests.models import mean_model
from tests.mqtt_helpers import Collector, mosquitto_pub

STATUS = "sigmoid-edge/testnode/status"
OUT = "edge/+/classification"


@pytest.fixture
def model(tmp_path):
    return mean_model(tmp_path / "model.onnx")


def next_on(collector: Collector, suffix: str, timeout: float = 10.0) -> dict:
    """The next message whose topic ends with ``suffix``, decoded from JSON."""
    deadline = time.monotonic() + timeout
    while True:
        msg = collector.get(max(0.01, deadline - time.monotonic()))
        if msg.topic.endswith(suffix):
            return json.loads(msg.payload)


def wait_status(collector: Collector, want: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        msg = collector.get(max(0.01, deadline - time.monotonic()))
        if msg.topic.endswith("/status") and msg.payload.decode() == want:
            return


def test_kill_9_leaves_offline_through_the_retained_last_will(broker, model, tmp_path):
    with Collector(broker, STATUS) as status, DaemonProcess(broker, model, tmp_path) as d:
        wait_status(status, "online")
        d.signal(signal.SIGKILL)
        d.wait()
        wait_status(status, "offline")
    # Retained: a client that subscribes later still learns the daemon is gone.
    with Collector(broker, STATUS) as late:
        msg = late.get()
    assert msg.payload == b"offline" and msg.retain


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_publishes_offline_finishes_and_exits_cleanly(broker, model, tmp_path, sig):
    with Collector(broker, STATUS, OUT) as out, DaemonProcess(broker, model, tmp_path) as d:
        wait_status(out, "online")
        mosquitto_pub(broker, "sensors/t/a", json.dumps({"samples": [[2, 2, 2]] * 8}), qos=1)
        first = out.get()
        assert first.topic == "edge/t/classification"
        start = time.monotonic()
        d.signal(sig)
        assert d.wait(10) == 0, d.log()
        took = time.monotonic() - start
        wait_status(out, "offline", timeout=2)
    assert took < 5.0
    assert "stopped" in d.log() and "Traceback" not in d.log()


def test_sighup_reloads_a_good_model_and_keeps_serving_after_a_bad_one(broker, model, tmp_path):
    topics = (OUT, "sigmoid-edge/testnode/errors")
    batch = json.dumps({"samples": [[2, 2, 2]] * 8})
    with Collector(broker, STATUS, *topics) as out, DaemonProcess(broker, model, tmp_path) as d:
        wait_status(out, "online")
        mosquitto_pub(broker, "sensors/r/a", batch, qos=1)
        before = next_on(out, "classification")["model"]
        # A good new version: outputs carry its sha256 after SIGHUP.
        mean_model(model, version="2")
        d.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reloaded model" not in d.log():
            assert time.monotonic() < deadline, d.log()
            time.sleep(0.05)
        mosquitto_pub(broker, "sensors/r/a", batch, qos=1)
        after = next_on(out, "classification")["model"]
        # A broken file: refused, reported, and version 2 keeps serving.
        model.write_bytes(b"this is not an onnx model")
        d.signal(signal.SIGHUP)
        error = next_on(out, "errors")
        mosquitto_pub(broker, "sensors/r/a", batch, qos=1)
        still = next_on(out, "classification")
    assert before["version"] == "1" and after["version"] == "2"
    assert before["sha256"] != after["sha256"]
    assert error["reason"] == "model_rejected" and "not a loadable ONNX model" in error["detail"]
    assert error["serving"]["version"] == "2"
    assert still["model"] == after and still["label"] == "high"


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIGMOID_EDGE_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "edge", "run", *args], capture_output=True,
                          text=True, timeout=30, env=full_env, cwd=ROOT)


def test_check_config_loads_the_model_and_reports(model, tmp_path):
    conf = tmp_path / "edge.toml"
    conf.write_text(f'model = "{model}"\nbroker = "mqtts://pi.local"\nnode = "line1"\n'
                    '[channels]\nx = "accel.x"\n[postprocess]\nsmoothing = 3\n')
    ok = run_cli("--config", str(conf), "--check-config")
    assert ok.returncode == 0, ok.stderr
    assert "config OK" in ok.stdout and "test-mean" in ok.stdout and "node line1" in ok.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--broker", "http://x"], {}, "mqtt:// or mqtts://"),
        (["--qos", "1"], {"SIGMOID_EDGE_QOS": "7"}, None),  # CLI wins over a bad env value
        ([], {"SIGMOID_EDGE_QOS": "7"}, "qos (environment SIGMOID_EDGE_QOS): must be 0, 1 or 2"),
        ([], {"SIGMOID_EDGE_THREADS": "two"}, "threads (environment SIGMOID_EDGE_THREADS) "
                                              "must be an integer, got 'two'"),
        (["--input-topic", "sensors/#"], {}, "must contain {device}"),
        (["--min-confidence", "2"], {}, "min_confidence (--min-confidence): must be between"),
        (["--tls-ca", "/nonexistent/ca.pem"], {}, "tls_ca (--tls-ca): file /nonexistent"),
    ],
)
def test_check_config_errors_are_precise(model, args, env, message):
    proc = run_cli("--model", str(model), *args, "--check-config", env=env)
    if message is None:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 1
        assert message in proc.stderr, proc.stderr


def test_check_config_rejects_a_broken_model_and_a_bad_mapping(model, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    proc = run_cli("--model", str(bad), "--check-config")
    assert proc.returncode == 1 and "not a loadable ONNX model" in proc.stderr
    conf = tmp_path / "edge.toml"
    conf.write_text('[channels]\nw = "power"\n')
    proc = run_cli("--model", str(model), "--config", str(conf), "--check-config")
    assert proc.returncode == 1
    assert "channels the model does not have: ['w']" in proc.stderr


def test_unreachable_broker_is_a_clear_error(model):
    proc = run_cli("--model", str(model), "--broker", "mqtt://127.0.0.1:1")
    assert proc.returncode == 1
    assert "cannot connect to the broker at mqtt://127.0.0.1:1" in proc.stderr
