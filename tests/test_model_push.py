"""Signed model updates in the running daemon, over a real mosquitto.

Accepted pushes switch ``model.sha256`` without losing a window and survive a restart;
bad signatures, untrusted keys, tampered bytes and replayed older pushes are refused with
the reason reported; a model that fails on real windows is rolled back.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time

import numpy as np
import onnx
import pytest

from edge import signing
from edge.contract import INPUT_NAME, OUTPUT_NAME, encode_metadata
from tests.daemon_helpers import ROOT, running, wait_for
from tests.models import mean_model
from tests.mqtt_helpers import Collector
from trainer.graph import GraphBuilder, float_input
from trainer.signing import keygen, load_private_key, sign_file, sign_model

OUT = "edge/+/classification"
ERRORS = "sigmoid-edge/testnode/errors"
MODEL_TOPIC = "sigmoid-edge/testnode/model"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    pairs = {name: keygen(root / name) for name in ("trusted", "other")}
    return {name: (load_private_key(p.private_path), p.public_path) for name, p in pairs.items()}


@pytest.fixture
def signed_model(tmp_path, keys):
    """Version 1 of a model, signed by the trusted key (MODEL.sig beside it)."""
    path = mean_model(tmp_path / "model.onnx", window=4, hop=4, version="1")
    sign_file(path, keys["trusted"][1].with_name("signing.key"))
    return path


def model_bytes(tmp_path, version: str, **kw) -> bytes:
    return mean_model(tmp_path / f"v{version}.onnx", window=4, hop=4, version=version,
                      **kw).read_bytes()


def push_payload(model: bytes, key, signed_at: int | None = None, **overrides) -> bytes:
    sig = sign_model(model, key, "model.onnx", signed_at=signed_at)
    if overrides:  # alter the statement after signing: the signature no longer matches
        sig = signing.Signature(**{**sig.statement(), **overrides, "signature": sig.signature})
    return signing.encode_push(model, sig)


def publish(collector: Collector, topic: str, payload, qos: int = 1) -> None:
    collector.client.publish(topic, payload, qos=qos).wait_for_publish(5)


def events(collector: Collector, n: int, timeout: float = 15.0) -> list[dict]:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        msg = collector.get(max(0.01, deadline - time.monotonic()))
        if msg.topic == ERRORS:
            out.append(json.loads(msg.payload))
    return out


def trusted(keys, signed_model, **values):
    return dict(trusted_keys=[str(keys["trusted"][1])], **values)


def nan_on_varying_model(path, version="bad") -> bytes:
    """Trained on [-2, 2] (its input_range); returns NaN for every window that is not
    constant, so it passes the self-test (constant windows) and fails on real data."""
    g = GraphBuilder("test-mean")
    axis = g.const("time_axis", np.array([1], np.int64))
    mean = g.op("ReduceMean", [INPUT_NAME, axis], name="mean_over_time", keepdims=0)
    centred = g.op("Sub", [INPUT_NAME, g.op("ReduceMean", [INPUT_NAME, axis], name="m",
                                            keepdims=1)], name="centred")
    var = g.op("ReduceMean", [g.op("Mul", [centred, centred], name="sq"), axis],
               name="var", keepdims=0)
    poison = g.op("Sqrt", [g.op("Sub", [g.const("zero", np.zeros(3, np.float32)), var],
                                name="neg_var")], name="poison")  # NaN unless var == 0
    logits = g.op("MatMul", [mean, g.const("w", np.ones((3, 3), np.float32))], name="dense")
    probs = g.op("Softmax", [g.op("Add", [logits, poison], name="logits")], name="softmax",
                 axis=-1)
    g.rename(probs, OUTPUT_NAME)
    meta = {"labels": ["low", "mid", "high"], "channels": ["x", "y", "z"], "window": 4,
            "hop": 4, "name": "test-mean", "version": version, "sample_rate_hz": 100.0,
            "input_range": {"min": [-2, -2, -2], "max": [2, 2, 2]}}
    model = g.model([float_input(INPUT_NAME, [None, 4, 3])],
                    [float_input(OUTPUT_NAME, [None, 3])], encode_metadata(meta))
    onnx.save(model, path)
    return path.read_bytes()


def test_a_good_push_switches_the_model_without_losing_a_window(broker, tmp_path, keys,
                                                                 signed_model):
    v1 = hashlib.sha256(signed_model.read_bytes()).hexdigest()
    v2_bytes = model_bytes(tmp_path, "2")
    v2 = hashlib.sha256(v2_bytes).hexdigest()
    sent = []
    with running(broker, signed_model, **trusted(keys, signed_model)) as daemon, \
            Collector(broker, OUT, ERRORS) as out:
        assert MODEL_TOPIC in daemon.link.subscriptions

        def stream():  # one window every 10 ms until 50 windows after the swap
            after = 0
            while after < 50 and len(sent) < 3000:
                for _ in range(4):
                    out.client.publish("sensors/s1/a", "[0.1, 0.1, 0.1]", qos=1)
                sent.append(1)
                after += daemon.slot.current.sha256 == v2
                time.sleep(0.01)

        t = threading.Thread(target=stream)
        t.start()
        time.sleep(0.3)
        publish(out, MODEL_TOPIC, push_payload(v2_bytes, keys["trusted"][0]))
        t.join()
        n_windows = len(sent)
        msgs = out.take(n_windows + 1, timeout=20)
        daemon.publish_stats()
        stats_updates = daemon.updates.snapshot()
    docs = [json.loads(m.payload) for m in msgs]
    results = [d for d in docs if "label" in d]
    report = next(d for d in docs if "event" in d)
    shas = [r["model"]["sha256"] for r in results]
    assert len(results) == n_windows  # no window lost across the swap
    switch = shas.index(v2)
    assert switch > 0 and set(shas[:switch]) == {v1} and set(shas[switch:]) == {v2}
    assert report["event"] == "model_accepted" and report["model"]["sha256"] == v2
    assert report["previous"]["sha256"] == v1 and report["model"]["version"] == "2"
    assert stats_updates["accepted"] == 1 and stats_updates["rejected"] == {}
    # Stored with its signature: the file and MODEL.sig verify, so a restart serves it.
    assert signed_model.read_bytes() == v2_bytes
    keyring = signing.load_trusted_keys([keys["trusted"][1]])
    assert signing.verify_file(signed_model, None, keyring).sha256 == v2


def test_refused_pushes_report_their_reason(broker, tmp_path, keys, signed_model):
    key, other = keys["trusted"][0], keys["other"][0]
    good = model_bytes(tmp_path, "2")
    now = int(time.time())
    tampered = bytearray(push_payload(model_bytes(tmp_path, "3"), key))
    tampered[-20] ^= 0xFF  # a flipped byte in the model after signing
    pushes = [
        ("bad_signature", push_payload(good, key, version="9")),
        ("no_trusted_key", push_payload(good, other)),
        ("sha256_mismatch", bytes(tampered)),
        ("malformed", b"not a model push"),
        (None, push_payload(good, key, signed_at=now)),  # accepted
        ("replay", push_payload(model_bytes(tmp_path, "1b"), key, signed_at=now - 3600)),
    ]
    with running(broker, signed_model, **trusted(keys, signed_model)) as daemon, \
            Collector(broker, ERRORS) as out:
        got = []
        for _cause, payload in pushes:
            publish(out, MODEL_TOPIC, payload)
            got.append(events(out, 1)[0])
        serving = daemon.slot.current.sha256
        snap = daemon.updates.snapshot()
    for (cause, _), ev in zip(pushes, got, strict=True):
        if cause is None:
            assert ev["event"] == "model_accepted"
        else:
            assert ev["event"] == "model_rejected" and ev["cause"] == cause, ev
            assert ev["reason"] == "model_rejected" and len(ev["detail"]) > 20
    assert serving == hashlib.sha256(good).hexdigest()
    assert snap["rejected"] == {"bad_signature": 1, "no_trusted_key": 1, "sha256_mismatch": 1,
                                "malformed": 1, "replay": 1}


def test_replay_protection_and_the_pushed_model_survive_a_restart(broker, tmp_path, keys,
                                                                  signed_model):
    key = keys["trusted"][0]
    now = int(time.time())
    v2 = model_bytes(tmp_path, "2")
    old_push = push_payload(model_bytes(tmp_path, "old"), key, signed_at=now - 60)
    settings = trusted(keys, signed_model)
    with running(broker, signed_model, **settings) as daemon, Collector(broker, ERRORS) as out:
        publish(out, MODEL_TOPIC, push_payload(v2, key, signed_at=now))
        assert events(out, 1)[0]["event"] == "model_accepted"
    with running(broker, signed_model, **settings) as daemon, Collector(broker, ERRORS) as out:
        assert daemon.slot.current.sha256 == hashlib.sha256(v2).hexdigest()
        publish(out, MODEL_TOPIC, old_push)
        ev = events(out, 1)[0]
        # Re-pushing the serving model (e.g. retained) is a no-op.
        publish(out, MODEL_TOPIC, push_payload(v2, key, signed_at=now + 1))
        wait_for(lambda: daemon.updates.counts["unchanged"] == 1)
        assert daemon.stats.model_swaps == 0
    assert ev["cause"] == "replay"


def test_without_a_trusted_key_remote_push_is_off(broker, tmp_path, keys, signed_model):
    v1 = hashlib.sha256(signed_model.read_bytes()).hexdigest()
    with running(broker, signed_model) as daemon, Collector(broker, OUT) as out:
        assert MODEL_TOPIC not in daemon.link.subscriptions
        assert not daemon.updates.push_enabled
        publish(out, MODEL_TOPIC, push_payload(model_bytes(tmp_path, "2"), keys["trusted"][0]))
        publish(out, "sensors/n1/a", json.dumps({"samples": [[0, 0, 0]] * 4}))
        doc = json.loads(out.get().payload)
    assert doc["model"]["sha256"] == v1 and daemon.updates.snapshot()["accepted"] == 0


def test_a_model_failing_on_in_range_windows_of_two_devices_is_rolled_back(
        broker, tmp_path, keys, signed_model, monkeypatch):
    from edge import updates

    writers = []  # which thread stores a model: never the worker (issue 15)

    def write_verified(verified, path):
        writers.append((threading.current_thread().name, verified.sha256))
        return signing.write_verified(verified, path)

    monkeypatch.setattr(updates, "write_verified", write_verified)
    key = keys["trusted"][0]
    v1 = hashlib.sha256(signed_model.read_bytes()).hexdigest()
    bad = nan_on_varying_model(tmp_path / "bad.onnx")
    varying = json.dumps({"samples": [[-1, -1, -1], [0, 0, 0], [1, 1, 1], [-1, 0, 1]]})
    with running(broker, signed_model, **trusted(keys, signed_model)) as daemon, \
            Collector(broker, OUT, ERRORS) as out:
        publish(out, MODEL_TOPIC, push_payload(bad, key))
        assert events(out, 1)[0]["event"] == "model_accepted"  # it passed the self-test
        for i in range(3):  # one device alone, however often, never rolls a model back
            publish(out, "sensors/r1/a", varying)
            wait_for(lambda i=i: daemon.stats.window_rejects["inference_failed"] == i + 1)
        alone = [json.loads(m.payload) for m in out.take(3)]
        assert daemon.updates.counts["rolled_back"] == 0
        publish(out, "sensors/r2/a", varying)  # a second device: the model is at fault
        msgs = [json.loads(m.payload) for m in out.take(2)]
        publish(out, MODEL_TOPIC, push_payload(bad, key))  # the same model again
        again = events(out, 1)[0]
        wait_for(lambda: hashlib.sha256(signed_model.read_bytes()).hexdigest() == v1,
                 what="the good model stored again")
    assert [(d["reason"], d["device"]) for d in alone] == [("inference_failed", "r1")] * 3
    result = next(d for d in msgs if "label" in d)
    rolled = next(d for d in msgs if d.get("event") == "model_rolled_back")
    assert result["device"] == "r2" and result["model"]["sha256"] == v1  # re-run on v1
    assert rolled["model"]["sha256"] == v1 and rolled["failed"]["version"] == "bad"
    assert "non-finite" in rolled["detail"]
    assert again["cause"] == "rolled_back"
    # The good model is back on disk with its signature, written by the update thread.
    keyring = signing.load_trusted_keys([keys["trusted"][1]])
    assert signing.verify_file(signed_model, None, keyring).sha256 == v1
    assert writers[-1] == ("sigmoid-edge-updates", v1)
    assert {name for name, _ in writers} == {"sigmoid-edge-updates"}
    # One owner of "the previous model": the slot (the updates keep only signed bytes).
    assert not hasattr(daemon.updates, "previous")


def test_a_replaced_file_needs_a_valid_signature(broker, tmp_path, keys, signed_model):
    key_path = keys["trusted"][1].with_name("signing.key")
    v2 = model_bytes(tmp_path, "2")
    with running(broker, signed_model, **trusted(keys, signed_model)) as daemon, \
            Collector(broker, ERRORS) as out:
        signed_model.write_bytes(v2)  # replaced, but MODEL.sig is still v1's
        assert daemon.reload() is False
        refused = events(out, 1)[0]
        sign_file(signed_model, key_path)
        assert daemon.reload() is True
        assert daemon.slot.current.sha256 == hashlib.sha256(v2).hexdigest()
        snap = daemon.updates.snapshot()
    assert refused["cause"] == "sha256_mismatch" and refused["origin"] == "SIGHUP"
    assert snap["accepted"] == 1 and snap["rejected"] == {"sha256_mismatch": 1}


def test_an_unsigned_model_with_a_trusted_key_is_refused_at_start(tmp_path, keys):
    model = mean_model(tmp_path / "unsigned.onnx")
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--model", str(model), "--broker",
         "mqtt://127.0.0.1:1", "--trusted-key", str(keys["trusted"][1]), "--check-config"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert "model error" in proc.stderr and "MODEL.sig" in proc.stderr
    assert "sigmoid-train sign" in proc.stderr


def test_a_push_is_acknowledged_in_a_persistent_session(broker, tmp_path, keys, signed_model):
    settings = trusted(keys, signed_model, client_id="edge-push", qos=1)
    with running(broker, signed_model, **settings) as daemon, Collector(broker, ERRORS) as out:
        publish(out, MODEL_TOPIC, push_payload(model_bytes(tmp_path, "2"), keys["trusted"][0]))
        assert events(out, 1)[0]["event"] == "model_accepted"
        wait_for(lambda: not daemon._acks, what="the push acknowledged")
    # An unacknowledged push would be sent again when the session resumes.
    with running(broker, signed_model, **settings) as daemon, Collector(broker, OUT) as out:
        assert daemon.link.session_present
        publish(out, "sensors/a1/a", json.dumps({"samples": [[0, 0, 0]] * 4}))
        out.get()
        time.sleep(0.3)
        assert daemon.updates.counts["unchanged"] == 0 and daemon.updates.rejected == {}
