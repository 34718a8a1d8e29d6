"""edge.paho_fast leans on paho's internals: fail loudly when a paho release changes them.

:class:`edge.paho_fast.FastClient` overrides private methods of paho's ``Client``; a
renamed method would silently stop being called (the daemon would still work, slower),
and a changed signature or attribute would break the receive path. These checks read the
installed paho; when one fails, re-read paho's ``client.py`` for what changed, adapt
``edge/paho_fast.py`` (and ``PAHO_INTERNALS``), and run tests/test_mqtt_client.py.
"""

from __future__ import annotations

import inspect

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.paho_fast import PAHO_INTERNALS, FastClient


@pytest.mark.parametrize("name, params", sorted(PAHO_INTERNALS["methods"].items()))
def test_paho_still_has_the_methods_we_override(name, params):
    method = getattr(mqtt.Client, name, None)
    assert callable(method), f"paho.mqtt.client.Client.{name} is gone: edge/paho_fast.py " \
                             "relies on it"
    got = [p for p in inspect.signature(method).parameters if p != "self"]
    assert got == params, f"paho.mqtt.client.Client.{name} now takes {got}, " \
                          f"edge/paho_fast.py was written for {params}"


@pytest.mark.parametrize("name, caller", sorted(PAHO_INTERNALS["called_from"].items()))
def test_paho_still_calls_them_where_we_expect(name, caller):
    source = inspect.getsource(getattr(mqtt.Client, caller))
    assert f"self.{name}(" in source, f"paho's Client.{caller} no longer calls self.{name}(): " \
                                      f"FastClient's override of {name} would do nothing"


def test_paho_clients_have_the_attributes_we_read():
    client = FastClient(CallbackAPIVersion.VERSION2)
    missing = [a for a in PAHO_INTERNALS["attributes"] if not hasattr(client, a)]
    assert not missing, f"paho clients no longer have {missing}"
    keys = set(client._in_packet)
    assert set(PAHO_INTERNALS["in_packet_keys"]) <= keys, f"paho's _in_packet has {keys}"


def test_every_override_is_listed():
    # A new override added to FastClient without its entry here would escape the checks.
    overridden = {name for name, value in vars(FastClient).items()
                  if callable(value) and hasattr(mqtt.Client, name)}
    assert overridden <= set(PAHO_INTERNALS["methods"]), overridden
