"""Every MQTT topic template of sigmoid-edge, and the one template-to-filter function.

The daemon's own topics live under ``sigmoid-edge/{node}/``; inputs and outputs default to
``sensors/{device}/#`` and ``edge/{device}/classification`` and are configurable. Nothing else
in the project spells a ``sigmoid-edge/...`` topic: import it from here.
"""

from __future__ import annotations

PREFIX = "sigmoid-edge"
SHARE = "$share/"  # MQTT 5 shared subscriptions: $share/GROUP/FILTER

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


def split_share(template: str) -> tuple[str, str]:
    """``$share/GROUP/sensors/{device}/#`` -> (``$share/GROUP/``, ``sensors/{device}/#``).

    An MQTT 5 shared subscription: the broker hands each message to one member of GROUP, and
    delivers it under the topic without the ``$share/GROUP/`` prefix. Other templates give
    (``""``, template).
    """
    if template.startswith(SHARE):
        parts = template.split("/", 2)
        if len(parts) == 3:
            return f"{parts[0]}/{parts[1]}/", parts[2]
    return "", template


def to_filter(template: str) -> tuple[str, int]:
    """The subscription filter of a topic template and the level that names the device.

    ``{device}`` (and any other ``{placeholder}`` level) becomes ``+``; a template without
    ``{device}`` takes the device from its first wildcard level. The level is counted in the
    topic as delivered, so a shared subscription's ``$share/GROUP/`` prefix does not count.

    ``sensors/{device}/#`` -> (``sensors/+/#``, 1); ``sensors/#`` -> (``sensors/#``, 1);
    ``sim/+/label`` -> (``sim/+/label``, 1);
    ``$share/g/sensors/{device}/#`` -> (``$share/g/sensors/+/#``, 1).

    Raises
    ------
    ValueError
        If the template has neither ``{device}`` nor a wildcard, so devices cannot be told apart.
    """
    share, rest = split_share(template)
    levels = rest.split("/")
    filter_ = share + "/".join(
        "+" if lv.startswith("{") and lv.endswith("}") else lv for lv in levels)
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
