"""The package installs, its commands answer, and the edge never needs the trainer."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import paho.mqtt.client as mqtt
import pytest

import edge
from edge.tools import synthetic
from tests.mqtt_helpers import Collector, mosquitto_pub, mosquitto_sub


@pytest.mark.parametrize("package", ["edge", "trainer"])
def test_help_and_version(package):
    out = subprocess.run([sys.executable, "-m", package, "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--log-level" in out and "usage:" in out
    version = subprocess.run([sys.executable, "-m", package, "--version"],
                             capture_output=True, text=True, check=True).stdout
    assert edge.__version__ in version


def test_edge_never_imports_trainer():
    code = textwrap.dedent("""
        import importlib, pkgutil, sys
        sys.modules["trainer"] = None  # any `import trainer` now raises ImportError
        import edge
        for mod in pkgutil.walk_packages(edge.__path__, "edge."):
            if mod.name != "edge.__main__":
                importlib.import_module(mod.name)
        print("ok", len(sys.modules))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")


def test_synthetic_data_is_seeded_and_labelled():
    X1, y1 = synthetic.make_windows(n_per_class=5, window=32, channels=3, seed=1)
    X2, y2 = synthetic.make_windows(n_per_class=5, window=32, channels=3, seed=1)
    X3, _ = synthetic.make_windows(n_per_class=5, window=32, channels=3, seed=2)
    assert X1.shape == (20, 32, 3) and X1.dtype == np.float32
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)
    assert sorted(set(y1)) == sorted(synthetic.LABELS)


def test_synthetic_classes_differ(vibration):
    X, y = vibration
    # Imbalance shows as much more radial energy than normal running.
    rms = np.sqrt((X[..., 0] ** 2).mean(axis=1))
    assert rms[y == "imbalance"].mean() > 2 * rms[y == "normal"].mean()


def test_broker_with_real_clients(broker):
    with Collector(broker, "sensors/#") as paho_sub:
        mosquitto_pub(broker, "sensors/dev1/acc", '{"x": 1.5}', qos=1)
        msg = paho_sub.get()
    assert (msg.topic, msg.payload) == ("sensors/dev1/acc", b'{"x": 1.5}')

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish("edge/dev1/classification", "retained", qos=1, retain=True).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()
    assert mosquitto_sub(broker, "edge/#", 1) == [("edge/dev1/classification", "retained")]


def test_broker_restarts_on_same_port(broker):
    port = broker.port
    broker.kill()
    broker.start()
    assert broker.port == port
    mosquitto_pub(broker, "t", "x", retain=True)
    assert mosquitto_sub(broker, "t", 1) == [("t", "x")]
