"""Shared fixtures: a real mosquitto broker and seeded synthetic sensor data."""

from __future__ import annotations

import pytest

from edge.tools import synthetic
from tests.mqtt_helpers import Broker


@pytest.fixture
def broker(tmp_path):
    """A fresh mosquitto on a free loopback port, stopped after the test."""
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def vibration():
    """Seeded synthetic machine-vibration windows: (X [N, 64, 3] float32, y str labels)."""
    return synthetic.make_windows(n_per_class=30, window=64, channels=3, seed=7)


@pytest.fixture
def make_secure_broker(tmp_path):
    """Start TLS + password + ACL brokers (``tests.tls_helpers.secure_broker``); all stopped after.

    Call it as ``make_secure_broker(users={"daemon": "pw"}, acl={"daemon": ["readwrite #"]})``.
    """
    from tests.tls_helpers import secure_broker

    started = []

    def make(users, acl=None, **kwargs):
        sb = secure_broker(tmp_path / f"secure-{len(started)}", users, acl, **kwargs)
        started.append(sb)
        return sb

    yield make
    for sb in started:
        sb.broker.stop()
