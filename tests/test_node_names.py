"""One node-name rule for the daemon (``node``) and ``sigmoid-train push --node``.

A push to a node name the daemon refuses would go to a topic no daemon listens on; before
the rule was shared, push accepted DEL and invisible characters the daemon does not.
"""

from __future__ import annotations

import pytest

from edge.config import ConfigError, check_node_name, load_config
from trainer.push import PushError, push_model

BAD = ["", "a/b", "a+b", "a#b", "tab\there", "del\x7f", "c1\x85", "rtl\u202eoverride",
       "zero\u200bwidth", "x" * 129]
GOOD = ["press-7", "Halle 3", "машина", "x" * 128]


def daemon_accepts(node: str, tmp_path) -> bool:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")  # load_config checks only that it exists
    try:
        load_config(cli={"model": str(model), "broker": "mqtt://localhost", "node": node},
                    env={})
    except ConfigError as exc:
        assert "node" in str(exc)
        return False
    return True


def push_accepts(node: str, tmp_path) -> bool:
    try:
        # The node is checked before the key or the model is read.
        push_model(tmp_path / "missing.onnx", tmp_path / "missing.key", node,
                   "mqtt://127.0.0.1:1")
    except PushError as exc:
        return "--node" not in str(exc)
    except Exception:
        return True
    return True


@pytest.mark.parametrize("node", BAD[1:])  # an empty node makes the daemon use the host name
def test_the_daemon_and_push_refuse_the_same_names(node, tmp_path):
    assert not check_node_name(node)
    assert not daemon_accepts(node, tmp_path)
    assert not push_accepts(node, tmp_path)


def test_push_refuses_an_empty_node(tmp_path):
    assert not push_accepts("", tmp_path)


@pytest.mark.parametrize("node", GOOD)
def test_the_daemon_and_push_accept_the_same_names(node, tmp_path):
    assert check_node_name(node)
    assert daemon_accepts(node, tmp_path)
    assert push_accepts(node, tmp_path)
