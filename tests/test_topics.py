"""The topic templates and the template-to-filter function (pure logic)."""

import pytest

from edge import topics


@pytest.mark.parametrize("template, expected", [
    ("sensors/{device}/#", ("sensors/+/#", 1)),
    ("{device}", ("+", 0)),
    ("sensors/#", ("sensors/#", 1)),
    ("sim/+/label", ("sim/+/label", 1)),
    ("spBv1.0/{group}/DDATA/{node}/{device}", ("spBv1.0/+/DDATA/+/+", 4)),
    ("$share/g1/sensors/{device}/#", ("$share/g1/sensors/+/#", 1)),
    ("$share/g1/{device}", ("$share/g1/+", 0)),
])
def test_to_filter(template, expected):
    assert topics.to_filter(template) == expected


def test_a_template_that_cannot_tell_devices_apart_says_what_to_use():
    with pytest.raises(ValueError, match="sensors/\\{device\\}/#"):
        topics.to_filter("sensors/pump")


@pytest.mark.parametrize("filter_, topic, expected", [
    ("sensors/+/#", "sensors/p1/accel", True),
    ("sensors/+/#", "sensors/p1", True),
    ("sensors/+/x", "sensors/p1/y", False),
    ("sensors/+", "sensors/p1/x", False),
    ("a/#", "b/c", False),
])
def test_matches(filter_, topic, expected):
    assert topics.matches(filter_, topic) is expected


def test_node_and_device_topics():
    assert topics.node_topic(topics.STATS, "pi") == "sigmoid-edge/pi/stats"
    assert topics.all_nodes(topics.INFO) == "sigmoid-edge/+/info"
    assert topics.device_topic(topics.OUTPUT, "pump1") == "edge/pump1/classification"
    assert topics.node_topic(topics.CAPTURE, "pi").replace("{device}", "d") == \
        "sigmoid-edge/pi/capture/d"


def test_split_share():
    assert topics.split_share("$share/g/sensors/{device}/#") == ("$share/g/", "sensors/{device}/#")
    assert topics.split_share("sensors/{device}/#") == ("", "sensors/{device}/#")
