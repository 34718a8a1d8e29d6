"""The daemon over TLS with a password and an ACL, and over MQTT 3.1.1 (real mosquitto)."""

from __future__ import annotations

import json
import time

import pytest

from tests.daemon_helpers import DaemonProcess, classifications, running
from tests.models import mean_model
from tests.mqtt_helpers import Collector, mosquitto_pub

pytest.importorskip("cryptography")  # the test PKI is generated with it

USERS = {"daemon": "d43mon-pw", "sensor": "s3nsor", "app": "4pp"}
ACL = {
    "daemon": ["read sensors/#", "write edge/#", "readwrite sigmoid-edge/#"],
    "sensor": ["write sensors/#"],
    "app": ["read edge/#", "read sigmoid-edge/#"],
}


@pytest.fixture
def model(tmp_path):
    return mean_model(tmp_path / "model.onnx")


def wait_online(collector: Collector, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while collector.get(max(0.01, deadline - time.monotonic())).payload != b"online":
        pass


@pytest.mark.parametrize("client_cert", [False, True], ids=["password", "password+cert"])
def test_tls_with_password_file_and_acl(make_secure_broker, model, tmp_path, client_cert):
    sb = make_secure_broker(USERS, ACL, require_certificate=client_cert)
    args = ["--username", "daemon", "--password-file", str(sb.password_file_for("daemon")),
            "--tls-ca", str(sb.tls.ca_cert)]
    if client_cert:
        args += ["--tls-cert", str(sb.tls.client_cert), "--tls-key", str(sb.tls.client_key)]
    with Collector(sb.broker, "sigmoid-edge/+/status", "edge/+/classification",
                   **sb.paho_kwargs("app")) if not client_cert else _cert_collector(sb) as out, \
            DaemonProcess(sb.broker, model, tmp_path, *args) as d:
        wait_online(out)
        mosquitto_pub(sb.broker, "sensors/secure/a", json.dumps({"samples": [[2, 2, 2]] * 8}),
                      qos=1, extra=sb.client_args("sensor", client_cert=client_cert))
        msg = out.get()
        assert msg.topic == "edge/secure/classification", d.log()
    assert json.loads(msg.payload)["label"] == "high"


def _cert_collector(sb):
    return Collector(sb.broker, "sigmoid-edge/+/status", "edge/+/classification",
                     **sb.paho_kwargs("app"), tls_cert=str(sb.tls.client_cert),
                     tls_key=str(sb.tls.client_key))


def test_bad_password_is_one_clear_error(make_secure_broker, model, tmp_path):
    sb = make_secure_broker(USERS, ACL)
    start = time.monotonic()
    with DaemonProcess(sb.broker, model, tmp_path, "--username", "daemon", "--tls-ca",
                       str(sb.tls.ca_cert), env={"SIGMOID_EDGE_PASSWORD": "wrong"}) as d:
        assert d.wait(20) == 1
        log = d.log()
    assert "refused the connection" in log and "SIGMOID_EDGE_PASSWORD" in log
    assert "Traceback" not in log and time.monotonic() - start < 15


def test_untrusted_broker_certificate_is_a_clear_error(make_secure_broker, model, tmp_path):
    sb = make_secure_broker(USERS, ACL)
    with DaemonProcess(sb.broker, model, tmp_path, "--username", "daemon",
                       env={"SIGMOID_EDGE_PASSWORD": USERS["daemon"]}) as d:  # no --tls-ca
        assert d.wait(20) == 1
        log = d.log()
    assert "cannot connect to the broker" in log and "CERTIFICATE_VERIFY_FAILED" in log


def test_mqtt_311(broker, model):
    with running(broker, model, mqtt_version="3.1.1") as daemon, \
            Collector(broker, "edge/+/classification") as out:
        assert daemon.link.client.protocol == 4  # MQTTv311
        mosquitto_pub(broker, "sensors/old/a", "\n".join(["[0, 0, 0]"] * 8), lines=True, qos=1)
        doc = classifications(out, 1)[0]
    assert doc["device"] == "old" and doc["label"] == "low"
