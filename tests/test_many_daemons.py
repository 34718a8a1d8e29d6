"""Many daemons, one site: ``--shard K/N`` and MQTT 5 shared subscriptions on a real mosquitto."""

from __future__ import annotations

import json
import signal
import zlib
from collections import Counter

import numpy as np
import pytest

from edge.config import ConfigError, shard_of
from edge.runner import Runner
from edge.windows import WindowBuffers
from tests.daemon_helpers import DaemonProcess, config, running, wait_for
from tests.models import mean_model
from tests.mqtt_helpers import Collector

WINDOW, HOP = 8, 4  # mean_model's


@pytest.fixture
def model(tmp_path):
    return mean_model(tmp_path / "model.onnx", hop=WINDOW)  # x, y, z; window 8, no overlap


def owner(device: str, n: int) -> int:
    return zlib.crc32(device.encode()) % n


# pure logic ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [("0/2", (0, 2)), ("1/2", (1, 2)), ("0/1", (0, 1))])
def test_shard_of(text, expected):
    assert shard_of(text) == expected


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "1/0", "0/2/3", ""])
def test_a_bad_shard_says_what_is_expected(text):
    with pytest.raises(ValueError, match="K/N with whole numbers 0 <= K < N"):
        shard_of(text)


def test_config_refuses_a_bad_shard_and_a_shared_subscription_under_3_1_1(broker, model):
    with pytest.raises(ConfigError, match="shard.*K/N"):
        config(broker, model, shard="3/2")
    with pytest.raises(ConfigError, match=r"shared subscription \(\$share/GROUP/...\) needs "
                                          "MQTT 5"):
        config(broker, model, input_topic="$share/g/sensors/{device}/#", mqtt_version="3.1.1")
    with pytest.raises(ConfigError, match="GROUP without wildcards"):
        config(broker, model, input_topic="$share/+/sensors/{device}/#")
    cfg = config(broker, model, input_topic="$share/g/sensors/{device}/#", shard="1/2")
    assert cfg.shard == "1/2"


def test_buffers_name_a_device_whose_samples_arrive_with_holes():
    buffers = WindowBuffers(8, 1, 8, sample_rate_hz=100.0, watch_interleaving=True)
    t = 0.0
    for _ in range(5):  # every other sample: what one of two round-robin members sees
        for dev, step in (("holes", 0.02), ("whole", 0.01)):
            times = t + step * np.arange(4)
            buffers.push(dev, np.zeros((4, 1), np.float32), times, own_times=True)
        t += 0.08
    assert buffers.interleaved == ["holes"]


def test_whole_window_messages_are_split_off_and_start_afresh():
    one = ("d", [1.0], None, 0.0)
    whole = ("d", np.zeros((WINDOW, 1), np.float32), None, 0.0)
    parts = list(Runner._by_message([one, one, whole, one, whole, whole], WINDOW))
    assert [(restart, len(items)) for restart, items in parts] == [
        (False, 2), (True, 1), (False, 1), (True, 1), (True, 1)]


# real broker ------------------------------------------------------------------------------

def one_sample_stream(devices: list[str], windows: int) -> list[tuple[str, str]]:
    """(topic, payload) of ``windows`` whole windows per device, one sample a message, in
    round-robin order with timestamps 10 ms apart (the model's 100 Hz)."""
    out = []
    for i in range(windows * WINDOW):
        for d in devices:
            out.append((f"sensors/{d}/accel",
                        json.dumps({"x": i % 3, "y": 1, "z": 0, "ts": 1000 + i / 100})))
    return out


def publish(collector: Collector, messages) -> None:
    infos = [collector.client.publish(t, p, qos=1) for t, p in messages]
    for info in infos:
        info.wait_for_publish(10)


# Without a client id other shards' messages are dropped before paho decodes them; with one
# (a persistent session, acknowledged in order by the daemon) they take the normal path.
@pytest.mark.parametrize("persistent", [False, True], ids=["early-drop", "persistent"])
def test_two_shards_classify_every_window_exactly_once(broker, model, persistent):
    devices = [f"dev{i:02d}" for i in range(20)]
    assert {owner(d, 2) for d in devices} == {0, 1}  # both shards have devices
    windows = 3
    ids = ({"client_id": "edge-a"}, {"client_id": "edge-b"}) if persistent else ({}, {})
    with running(broker, model, shard="0/2", node="a", output_topic="edge/{device}/a",
                 **ids[0]) as a, \
            running(broker, model, shard="1/2", node="b", output_topic="edge/{device}/b",
                    **ids[1]) as b, \
            Collector(broker, "edge/+/+") as out:
        assert a.cfg.persistent_session is persistent
        publish(out, one_sample_stream(devices, windows))
        got = [(m.topic.split("/")[2], json.loads(m.payload))
               for m in out.take(len(devices) * windows, timeout=20)]
        wait_for(lambda: a.stats.not_mine + b.stats.not_mine
                 == len(devices) * windows * WINDOW, what="every message counted")
    by_device = {}
    for daemon, doc in got:
        by_device.setdefault(doc["device"], set()).add(daemon)
        assert daemon == "ab"[owner(doc["device"], 2)]
    assert all(len(v) == 1 for v in by_device.values()) and set(by_device) == set(devices)
    keys = Counter((doc["device"], doc["window_start"]) for _, doc in got)
    assert len(keys) == len(devices) * windows and max(keys.values()) == 1
    mine_a = sum(owner(d, 2) == 0 for d in devices) * windows * WINDOW
    assert a.stats.samples == mine_a
    assert a.stats.not_mine == len(devices) * windows * WINDOW - mine_a


def whole_windows(device: str, count: int, start: float = 1000.0) -> list[tuple[str, str]]:
    return [(f"sensors/{device}/accel", json.dumps({
        "samples": [[k % 3, 1, 0]] * WINDOW, "ts": start + k * WINDOW / 100}))
        for k in range(count)]


def test_a_shared_group_classifies_each_whole_window_message_once(broker, model):
    group = "$share/site/sensors/{device}/#"
    messages = [m for d in ("p1", "p2", "p3") for m in whole_windows(d, 10)]
    with running(broker, model, input_topic=group, node="a", output_topic="edge/{device}/a") \
            as a, running(broker, model, input_topic=group, node="b",
                          output_topic="edge/{device}/b") as b, \
            Collector(broker, "edge/+/+") as out:
        publish(out, messages)
        got = [(m.topic.split("/")[2], json.loads(m.payload))
               for m in out.take(len(messages), timeout=20)]
        with pytest.raises(AssertionError):  # and nothing more
            out.take(1, timeout=0.5)
    keys = Counter((doc["device"], doc["window_start"]) for _, doc in got)
    assert len(keys) == len(messages) and max(keys.values()) == 1
    assert {daemon for daemon, _ in got} == {"a", "b"}  # the broker spread them
    assert a.stats.messages_in + b.stats.messages_in == len(messages)
    assert a.stats.interleaved_devices == b.stats.interleaved_devices == 0


@pytest.mark.slow
def test_when_a_member_dies_the_survivor_takes_over_and_nothing_is_classified_twice(
        broker, model, tmp_path):
    group = "$share/site/sensors/{device}/#"
    args = ("--input-topic", group)
    with Collector(broker, "sigmoid-edge/doomed/status") as status, \
            DaemonProcess(broker, model, tmp_path, *args, node="doomed") as doomed, \
            running(broker, model, input_topic=group, node="survivor") as survivor, \
            Collector(broker, "edge/+/classification") as out:
        assert status.get(timeout=15).payload == b"online"
        docs = [json.loads(m.payload) for m in publish_and_take(out, whole_windows("m1", 10))]
        doomed.signal(signal.SIGKILL)
        doomed.wait()
        assert status.get(timeout=20).payload == b"offline"  # the last will: the broker knows
        before = survivor.stats.classifications
        docs += [json.loads(m.payload)
                 for m in publish_and_take(out, whole_windows("m1", 10, start=2000.0))]
        assert survivor.stats.classifications - before == 10
        with pytest.raises(AssertionError):  # and nothing more
            out.take(1, timeout=0.5)
    starts = Counter(d["window_start"] for d in docs)
    assert len(starts) == 20 and max(starts.values()) == 1


def publish_and_take(out: Collector, messages):
    publish(out, messages)
    return out.take(len(messages), timeout=20)
