"""The TLS / password / ACL broker that other tests build on behaves like a real deployment."""

from __future__ import annotations

import queue
import stat
import subprocess
import threading

import pytest

from tests.mqtt_helpers import Collector, mosquitto_pub, mosquitto_sub, require
from tests.tls_helpers import (
    USERS,
    broker_config,
    deployment_acl,
    make_tls_files,
    secure_broker,
)

ACL = deployment_acl("n1")


@pytest.fixture
def sb(tmp_path):
    s = secure_broker(tmp_path, USERS, ACL)
    yield s
    s.broker.stop()


def raw_pub(sb, topic, message, args):
    return subprocess.run(
        [require("mosquitto_pub"), "-h", sb.broker.host, "-p", str(sb.broker.port),
         "-t", topic, "-m", message, "-q", "1", *args],
        capture_output=True, text=True, timeout=20)


def test_tls_with_user_and_password_delivers(sb):
    assert sb.url.startswith("mqtts://127.0.0.1:")
    with Collector(sb.broker, "sensors/#", **sb.paho_kwargs("daemon")) as daemon:
        mosquitto_pub(sb.broker, "sensors/m1/vib", '{"x": 1}', qos=1,
                      extra=sb.client_args("sensor"))
        msg = daemon.get()
    assert (msg.topic, msg.payload) == ("sensors/m1/vib", b'{"x": 1}')


def test_mosquitto_sub_over_tls_receives(sb):
    got = {}
    t = threading.Thread(target=lambda: got.update(pairs=mosquitto_sub(
        sb.broker, "edge/#", 1, qos=1, extra=sb.client_args("ops"))))
    t.start()
    # mosquitto_sub needs a moment to subscribe; publish a few times until it has one.
    for _ in range(20):
        raw_pub(sb, "edge/m1/classification", "normal", sb.client_args("daemon"))
        t.join(0.25)
        if not t.is_alive():
            break
    t.join(15)
    assert got["pairs"][0] == ("edge/m1/classification", "normal")


def test_bad_password_is_refused_clearly(sb):
    proc = raw_pub(sb, "sensors/m1/vib", "1", sb.client_args("sensor", password="nope"))
    assert proc.returncode != 0
    assert "not authorised" in proc.stderr.lower()
    with pytest.raises(ConnectionError, match="Not authorized"):
        Collector(sb.broker, "#", **sb.paho_kwargs("ops", password="nope"))


def test_no_credentials_and_no_tls_are_refused(sb):
    anonymous = raw_pub(sb, "sensors/m1/vib", "1", ("--cafile", str(sb.tls.ca_cert)))
    assert anonymous.returncode != 0 and "not authorised" in anonymous.stderr.lower()
    plaintext = raw_pub(sb, "sensors/m1/vib", "1", ("-u", "sensor", "-P", "s-pass"))
    assert plaintext.returncode != 0


def test_acl_denied_topics_are_not_delivered(sb):
    with Collector(sb.broker, "#", **sb.paho_kwargs("ops")) as ops:
        # Denied: the daemon writing into another node's topics or into sensors/.
        for topic in ("sigmoid-edge/n2/model", "sensors/m1/vib"):
            mosquitto_pub(sb.broker, topic, "denied", qos=1, extra=sb.client_args("daemon"))
        # Allowed, published last: once it arrives, any denied message would have too.
        mosquitto_pub(sb.broker, "sigmoid-edge/n1/status", "online", qos=1,
                      extra=sb.client_args("daemon"))
        first = ops.get()
        assert (first.topic, first.payload) == ("sigmoid-edge/n1/status", b"online")
        with pytest.raises(queue.Empty):
            ops.get(timeout=0.5)


def test_acl_denied_subscription_receives_nothing(sb):
    # The sensor may write sensors/# but not read it.
    with Collector(sb.broker, "sensors/#", **sb.paho_kwargs("sensor")) as sensor, \
            Collector(sb.broker, "sensors/#", **sb.paho_kwargs("daemon")) as daemon:
        mosquitto_pub(sb.broker, "sensors/m1/vib", "1", qos=1, extra=sb.client_args("sensor"))
        assert daemon.get().payload == b"1"
        with pytest.raises(queue.Empty):
            sensor.get(timeout=0.5)


def test_client_certificate_can_be_required(tmp_path):
    sb = secure_broker(tmp_path, {"ops": "o-pass"}, require_certificate=True)
    try:
        with_cert = raw_pub(sb, "t", "1", sb.client_args("ops", client_cert=True))
        assert with_cert.returncode == 0, with_cert.stderr
        without = raw_pub(sb, "t", "1", sb.client_args("ops"))
        assert without.returncode != 0
    finally:
        sb.broker.stop()


def test_broker_config_lines(tmp_path):
    tls = make_tls_files(tmp_path)
    text = broker_config(tls, tmp_path / "pw", tmp_path / "acl")
    assert f"cafile {tls.ca_cert}" in text and f"certfile {tls.server_cert}" in text
    assert "allow_anonymous false" in text and f"acl_file {tmp_path / 'acl'}" in text
    assert "require_certificate" not in text
    assert stat.S_IMODE(tls.server_key.stat().st_mode) == 0o600
