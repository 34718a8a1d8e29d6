"""Home Assistant MQTT discovery (``--ha-discovery``): one HA device per classified device.

For every device the daemon accepts data from, it publishes retained discovery configs
(Home Assistant's MQTT discovery schema) under ``{prefix}/{component}/{unique_id}/config``:

- ``sensor`` *Label*: state ``{{ value_json.label }}`` from the device's classification
  topic, attributes ``confidence`` and ``probabilities``;
- for models with an ``anomaly_score`` output (:data:`edge.contract.ANOMALY_OUTPUT`): a
  ``binary_sensor`` *Anomaly* (device class ``problem``, on when ``anomaly`` is true) and a
  ``sensor`` *Anomaly score* (state class ``measurement``, so HA keeps statistics).

Components a model does not have get an empty retained payload, which makes Home
Assistant delete an entity left from an earlier model and clears the retained config.

Every entity is available while the daemon's retained status (``sigmoid-edge/{node}/status``)
is ``online``. A device is announced on its first *accepted* message (a payload the
parser took), not on its first classification: the entity then exists before the first
window is full, so Home Assistant does not miss it. All known devices are announced again
when Home Assistant publishes ``online`` on ``{prefix}/status`` (its birth message, after a
restart that may have lost the broker's retained messages) and after a model swap (labels,
name, version or anomaly output may have changed).

Unique ids and topic levels allow only ``[A-Za-z0-9_-]`` (:func:`sanitize`); the device's
real name is the HA device name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import threading
from collections.abc import Callable

import edge
from edge import topics
from edge.models import LoadedModel

log = logging.getLogger(__name__)

ORIGIN = "sigmoid-edge"
LABEL_TEMPLATE = "{{ value_json.label }}"
LABEL_ATTRIBUTES_TEMPLATE = ('{{ {"confidence": value_json.confidence, '
                             '"probabilities": value_json.probabilities} | tojson }}')
ANOMALY_TEMPLATE = "{{ 'ON' if value_json.anomaly else 'OFF' }}"
ANOMALY_ATTRIBUTES_TEMPLATE = '{{ {"anomaly_score": value_json.anomaly_score} | tojson }}'
SCORE_TEMPLATE = "{{ value_json.anomaly_score }}"
# With --only-anomalies only anomalous windows are published, so nothing would ever turn
# the binary sensor off: Home Assistant turns it off this long after the last anomaly
# (at least this many seconds, and at least two hops of the model).
MIN_OFF_DELAY_S = 60
# Home Assistant's birth message makes every daemon re-announce at once; a random delay
# spreads a fleet's burst.
BIRTH_DELAY_S = (0.2, 2.0)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

Publish = Callable[..., object]


def sanitize(name: str) -> str:
    """``name`` as a unique-id/topic part: only ``[A-Za-z0-9_-]``.

    Other characters become ``_``; if any were replaced, 8 hex digits of the name's
    SHA-256 are appended so that ``pump.1`` and ``pump 1`` stay different.

    >>> sanitize("pump-1"), sanitize("Küche 1")
    ('pump-1', 'K_che_1_2da14dd0')
    """
    clean = _UNSAFE.sub("_", name)
    if clean != name:
        clean = f"{clean}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return clean


def discovery_configs(device: str, model: LoadedModel, *, node: str,
                      prefix: str = "homeassistant",
                      output_topic: str = "edge/{device}/classification",
                      status_topic: str | None = None, hop: int = 0,
                      only_anomalies: bool = False) -> list[tuple[str, str]]:
    """The discovery messages for one device: ``(topic, payload)``, payload ``""`` to remove.

    Parameters
    ----------
    device : str
        The device name as in its topics (already checked by the daemon).
    model : LoadedModel
        The serving model: its name and version, and whether it has an anomaly output.
    node : str
        The daemon's node name (part of every unique id, so two daemons never collide).
    prefix : str
        Home Assistant's discovery prefix.
    output_topic : str
        The classification topic template (``{device}`` is replaced).
    status_topic : str, optional
        The daemon's availability topic (default ``sigmoid-edge/{node}/status``).
    hop : int
        Samples between windows (0 = the model's), for the ``off_delay`` of
        ``only_anomalies``.
    only_anomalies : bool
        Only anomalous windows are published; the binary sensor gets an ``off_delay``.

    Returns
    -------
    list of (str, str)
        Label sensor, anomaly binary sensor, anomaly score sensor, in this order.
    """
    info = model.info
    base = f"sigmoid-edge_{sanitize(node)}_{sanitize(device)}"
    state_topic = output_topic.replace("{device}", device)
    common = {
        "state_topic": state_topic,
        "availability_topic": status_topic or topics.node_topic(topics.STATUS, node),
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
        "device": {
            "identifiers": [base],
            "name": device,
            "manufacturer": "sigmoid-edge",
            "model": info.name,
            "sw_version": info.version,
        },
        "origin": {"name": ORIGIN, "sw_version": edge.__version__},
    }
    label = {
        "name": "Label",
        "unique_id": f"{base}_label",
        "icon": "mdi:label-outline",
        "value_template": LABEL_TEMPLATE,
        "json_attributes_topic": state_topic,
        "json_attributes_template": LABEL_ATTRIBUTES_TEMPLATE,
        **common,
    }
    out = [(f"{prefix}/sensor/{label['unique_id']}/config", json.dumps(label))]
    anomaly_id, score_id = f"{base}_anomaly", f"{base}_anomaly_score"
    anomaly_topic = f"{prefix}/binary_sensor/{anomaly_id}/config"
    score_topic = f"{prefix}/sensor/{score_id}/config"
    if model.anomaly_threshold is None:
        return out + [(anomaly_topic, ""), (score_topic, "")]
    anomaly = {
        "name": "Anomaly",
        "unique_id": anomaly_id,
        "device_class": "problem",
        "value_template": ANOMALY_TEMPLATE,
        "payload_on": "ON",
        "payload_off": "OFF",
        "json_attributes_topic": state_topic,
        "json_attributes_template": ANOMALY_ATTRIBUTES_TEMPLATE,
        **common,
    }
    if only_anomalies:
        anomaly["off_delay"] = off_delay(info, hop)
    score = {
        "name": "Anomaly score",
        "unique_id": score_id,
        "icon": "mdi:chart-bell-curve",
        "state_class": "measurement",
        "value_template": SCORE_TEMPLATE,
        **common,
    }
    return out + [(anomaly_topic, json.dumps(anomaly)), (score_topic, json.dumps(score))]


def off_delay(info, hop: int = 0) -> int:
    """Seconds after the last anomaly before the binary sensor turns off (``only_anomalies``)."""
    if not info.sample_rate_hz:
        return MIN_OFF_DELAY_S
    return max(MIN_OFF_DELAY_S, math.ceil(2 * (hop or info.hop) / info.sample_rate_hz))


class Discovery:
    """Announces devices to Home Assistant and answers its birth message.

    Parameters
    ----------
    publish : callable
        ``publish(topic, payload, qos=..., retain=...)``, e.g. :meth:`edge.mqtt.MqttLink.publish`.
    current : callable
        Returns the serving :class:`LoadedModel` (e.g. ``lambda: slot.current``).
    node, prefix, output_topic, status_topic, hop, only_anomalies :
        As in :func:`discovery_configs`.
    max_devices : int
        Devices remembered (and announced); beyond that new devices are not announced
        (logged once), so a flood of device names cannot grow memory or retained messages
        without bound.
    birth_delay : (float, float)
        Random delay range (s) before re-announcing after Home Assistant's birth message.

    Notes
    -----
    :meth:`seen` runs on paho's network thread for every accepted message: its fast path is
    one set lookup. Announcing is a few non-blocking publishes, once per device.
    """

    def __init__(self, publish: Publish, current: Callable[[], LoadedModel], *, node: str,
                 prefix: str = "homeassistant",
                 output_topic: str = "edge/{device}/classification",
                 status_topic: str | None = None, hop: int = 0, only_anomalies: bool = False,
                 max_devices: int = 1000, birth_delay: tuple[float, float] = BIRTH_DELAY_S):
        self.publish = publish
        self.current = current
        self.prefix = prefix
        self.birth_topic = f"{prefix}/status"
        self.max_devices = max_devices
        self.birth_delay = birth_delay
        self._args = dict(node=node, prefix=prefix, output_topic=output_topic,
                          status_topic=status_topic, hop=hop, only_anomalies=only_anomalies)
        self.devices: set[str] = set()
        self.announcements = 0  # discovery messages published (for tests and logs)
        self.births = 0
        self._full_logged = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    @classmethod
    def from_config(cls, cfg, publish: Publish, current: Callable[[], LoadedModel]
                    ) -> Discovery:
        """A :class:`Discovery` for a validated :class:`edge.config.Config`."""
        return cls(publish, current, node=cfg.node, prefix=cfg.ha_prefix,
                   output_topic=cfg.output_topic, status_topic=cfg.status_topic, hop=cfg.hop,
                   only_anomalies=cfg.only_anomalies, max_devices=cfg.max_devices)

    def seen(self, device: str) -> None:
        """A message from ``device`` was accepted: announce it if it is new."""
        if device in self.devices:
            return
        with self._lock:
            if device in self.devices:
                return
            if len(self.devices) >= self.max_devices:
                if not self._full_logged:
                    self._full_logged = True
                    log.warning("Home Assistant discovery: %d devices announced (max_devices);"
                                " not announcing %r and further new devices",
                                len(self.devices), device)
                return
            self.devices.add(device)
        self._announce(device, self.current())

    def republish(self) -> int:
        """Announce every known device again; returns the number of devices."""
        with self._lock:
            devices = sorted(self.devices)
        model = self.current()
        for device in devices:
            self._announce(device, model)
        return len(devices)

    def on_birth(self, msg) -> None:
        """Handle a message on ``{prefix}/status``: ``online`` schedules a re-announcement."""
        if msg.payload.strip() != b"online":
            return
        self.births += 1
        delay = random.uniform(*self.birth_delay)
        log.info("Home Assistant is online: re-announcing %d devices in %.1f s",
                 len(self.devices), delay)
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(delay, self.republish)
            self._timer.daemon = True
            self._timer.start()

    def on_swap(self, old: LoadedModel, new: LoadedModel) -> None:
        """A model swap (listener of :class:`edge.models.ModelSlot`): announce again."""
        n = self.republish()
        log.info("Home Assistant discovery updated for %d devices after the model swap", n)

    def close(self) -> None:
        """Cancel a pending re-announcement."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def _announce(self, device: str, model: LoadedModel) -> None:
        for topic, payload in discovery_configs(device, model, **self._args):
            self.publish(topic, payload, qos=1, retain=True)
            self.announcements += 1
