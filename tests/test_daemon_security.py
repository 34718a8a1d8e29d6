"""The daemon behind TLS, passwords and ACLs, and hostile device names, on a real mosquitto."""

from __future__ import annotations

import json
import logging
import subprocess
import time

import pytest

from tests.daemon_helpers import DaemonProcess, classifications, running, wait_for
from tests.models import mean_model
from tests.mqtt_helpers import Collector, mosquitto_pub, require
from tests.tls_helpers import USERS, deployment_acl

ACL = deployment_acl("testnode")


@pytest.fixture
def model(tmp_path):
    return mean_model(tmp_path / "model.onnx", window=4, hop=4)


@pytest.fixture
def sb(make_secure_broker):
    return make_secure_broker(USERS, ACL)


def tls_settings(sb, user="daemon"):
    return dict(username=user, password_file=str(sb.password_file_for(user)),
                tls_ca=str(sb.tls.ca_cert))


def test_daemon_over_tls_with_password_and_acl(sb, model):
    assert sb.url.startswith("mqtts://")
    with running(sb.broker, model, **tls_settings(sb)) as daemon, \
            Collector(sb.broker, "edge/#", "sigmoid-edge/#", **sb.paho_kwargs("ops")) as ops:
        mosquitto_pub(sb.broker, "sensors/t1/a", "\n".join(["[2, 2, 2]"] * 8), lines=True,
                      qos=1, extra=sb.client_args("sensor"))
        wait_for(lambda: daemon.stats.published == 2)
        msgs = ops.take(4)  # the retained status and info, then two classifications
    topics = [m.topic for m in msgs]
    assert topics.count("edge/t1/classification") == 2
    assert "sigmoid-edge/testnode/status" in topics and "sigmoid-edge/testnode/info" in topics
    assert daemon.link.publish_refused == 0


def test_acl_denied_publish_is_reported(sb, model, caplog):
    caplog.set_level(logging.ERROR, logger="edge.mqtt")
    with running(sb.broker, model, output_topic="plant/{device}/label",
                 **tls_settings(sb)) as daemon:
        mosquitto_pub(sb.broker, "sensors/t2/a", "\n".join(["[0, 0, 0]"] * 8), lines=True,
                      qos=1, extra=sb.client_args("sensor"))
        wait_for(lambda: daemon.link.publish_refused == 2, what="two refused PUBACKs")
        daemon.publish_stats()
    refused = [r.message for r in caplog.records if "refused a publish" in r.message]
    assert len(refused) == 1  # rate-limited: one line, the count goes on in stats
    assert "Not authorized" in refused[0] and "ACL" in refused[0]


def test_bad_password_at_start_is_a_clear_error_without_retrying(sb, model, tmp_path):
    args = ("--username", "daemon", "--tls-ca", str(sb.tls.ca_cert))
    broker = sb.broker
    start = time.monotonic()
    with DaemonProcess(broker, model, tmp_path, *args,
                       env={"SIGMOID_EDGE_PASSWORD": "wrong"}) as d:
        code = d.wait(20)
        log = d.log()
    assert code == 1 and time.monotonic() - start < 15
    assert "Not authorized" in log and "wrong user name or password" in log
    assert log.count("refused the connection") == 1


def test_hostile_device_names_never_reach_an_output_topic(broker, model):
    safe = ["pump 1", 'quote"d', "back\\slash", "Küche", "x" * 128]
    hostile = ["rtl\u202eevil", "zero\u200bwidth", "bom\ufeff", "y" * 129,
               # Refused by Unicode category and Default_Ignorable_Code_Point, not a list:
               "alm\u061c", "soft\u00adhyphen", "line\u2028sep", "para\u2029sep",
               "iss\u206a", "tag\U000e0041", "anchor\ufff9", "filler\u3164",
               "vs\ufe0f", "private\ue000", "unassigned\U000e0200x\u0378"]
    with running(broker, model) as daemon, \
            Collector(broker, "edge/#", "sigmoid-edge/+/errors") as out:
        for name in safe + hostile:
            mosquitto_pub(broker, f"sensors/{name}/a", "\n".join(["[0, 0, 0]"] * 4),
                          lines=True, qos=1)
        # The broker and its clients refuse wildcards and control characters outright.
        for name in ["a+b", "a#b", "bell\x07", "nel\x85"]:
            proc = subprocess.run([require("mosquitto_pub"), "-h", broker.host, "-p",
                                   str(broker.port), "-t", f"sensors/{name}/a", "-m", "[0,0,0]"],
                                  capture_output=True, timeout=10)
            assert proc.returncode != 0
        wait_for(lambda: daemon.stats.published == len(safe)
                 and daemon.stats.rejected["bad_device"] == 4 * len(hostile))
        msgs = out.take(len(safe) + 1)
    outputs = {m.topic: json.loads(m.payload) for m in msgs if m.topic.startswith("edge/")}
    assert set(outputs) == {f"edge/{name}/classification" for name in safe}
    assert all(doc["device"] == topic.split("/")[1] for topic, doc in outputs.items())
    errors = [json.loads(m.payload) for m in msgs if m.topic.endswith("/errors")]
    assert errors and errors[0]["reason"] == "bad_device" and errors[0]["device"] is None


def test_daemon_over_tls_classifies_after_a_broker_restart(sb, model):
    with running(sb.broker, model, reconnect_min=0.05, reconnect_max=0.3,
                 **tls_settings(sb)) as daemon:
        sb.broker.restart()
        wait_for(lambda: daemon.link.connects == 2, what="the reconnect")
        assert daemon.link.subscribed.wait(5)
        with Collector(sb.broker, "edge/#", **sb.paho_kwargs("ops")) as ops:
            mosquitto_pub(sb.broker, "sensors/t3/a", "\n".join(["[2, 2, 2]"] * 4), lines=True,
                          qos=1, extra=sb.client_args("sensor"))
            assert classifications(ops, 1)[0]["label"] == "high"
