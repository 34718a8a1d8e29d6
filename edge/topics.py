"""Every MQTT topic template of sigmoid-edge, and the one template-to-filter function.

The daemon's own topics live under ``sigmoid-edge/{node}/``; inputs and outputs default to
``sensors/{device}/#`` and ``edge/{device}/classification`` and are configurable. Nothing else
in the project spells a ``sigmoid-edge/...`` topic: import it from here.
"""

from __future__ import annotations

PREFIX = "sigmoid-edge"

INPUT = "sensors/{device}/#"
OUTPUT = "edge/{device}/classification"

STATUS = PREFIX + "/{node}/status"  # retained online/offline, the last will
INFO = PREFIX + "/{node}/info"  # retained: software, model identity, runtime
STATS = PREFIX + "/{node}/stats"  # periodic JSON counters
ERRORS = PREFIX + "/{node}/errors"  # rate-limited rejections and model events
MODEL = PREFIX + "/{node}/model"  # signed model pushes in
CAPTURE = PREFIX + "/{node}/capture/{device}"  # windows worth labelling, out


def node_topic(template: str, node: str) -> str:
    """``STATS``, ``"pi"`` -> ``sigmoid-edge/pi/stats``."""
    return template.replace("{node}", node)


def device_topic(template: str, device: str) -> str:
    """``OUTPUT``, ``"pump1"`` -> ``edge/pump1/classification``."""
    return template.replace("{device}", device)


def all_nodes(template: str) -> str:
    """The filter that matches ``template`` for every node: ``sigmoid-edge/+/stats``."""
    return to_filter(template.replace("{node}", "{device}"))[0]


def to_filter(template: str) -> tuple[str, int]:
    """The subscription filter of a topic template and the level that names the device.

    ``{device}`` (and any other ``{placeholder}`` level) becomes ``+``; a template without
    ``{device}`` takes the device from its first wildcard level.

    ``sensors/{device}/#`` -> (``sensors/+/#``, 1); ``sensors/#`` -> (``sensors/#``, 1);
    ``sim/+/label`` -> (``sim/+/label``, 1).

    Raises
    ------
    ValueError
        If the template has neither ``{device}`` nor a wildcard, so devices cannot be told apart.
    """
    levels = template.split("/")
    filter_ = "/".join("+" if lv.startswith("{") and lv.endswith("}") else lv for lv in levels)
    if "{device}" in levels:
        return filter_, levels.index("{device}")
    for k, level in enumerate(levels):
        if level in ("+", "#"):
            return filter_, k
    raise ValueError(
        f"topic {template!r} has no '{{device}}' and no wildcard, so it cannot tell devices "
        "apart; use e.g. 'sensors/{device}/#' or 'sensors/#'"
    )


def matches(filter_: str, topic: str) -> bool:
    """Whether ``topic`` matches the subscription filter ``filter_`` (``+`` and ``#``)."""
    f, t = filter_.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)
