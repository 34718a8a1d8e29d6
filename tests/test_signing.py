"""Signed models: keygen, sign, verify, and push over plain and TLS+password brokers."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from edge import signing
from edge.contract import encode_metadata
from edge.signing import SignatureError
from tests.mqtt_helpers import Collector, require
from trainer.graph import GraphBuilder, float_input

NODE = "press-7"
TOPIC = f"sigmoid-edge/{NODE}/model"


def run_train(*args, env=None, timeout=60):
    """Run ``sigmoid-train`` as a user would; returns the CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if k != "SIGMOID_EDGE_PASSWORD"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "trainer", *map(str, args)],
                          capture_output=True, text=True, env=full_env, timeout=timeout)


def tiny_model(version: str = "1.0.0") -> bytes:
    """A real (if trivial) contract-shaped ONNX model: softmax of the window's channel means."""
    g = GraphBuilder("tiny")
    mean = g.op("ReduceMean", ["window", g.const("axes", np.array([1], np.int64))],
                name="mean", keepdims=0)
    g.rename(g.op("Softmax", [mean], name="softmax", axis=-1), "probabilities")
    meta = encode_metadata({"labels": ["a", "b"], "channels": ["x", "y"], "window": 8,
                            "hop": 8, "name": "tiny", "version": version})
    model = g.model([float_input("window", ["batch", 8, 2])],
                    [float_input("probabilities", ["batch", 2])], meta)
    return model.SerializeToString()


def _valid_push() -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from trainer.signing import sign_model

    model = tiny_model()
    return signing.encode_push(model, sign_model(model, ed25519.Ed25519PrivateKey.generate(),
                                                 "m.onnx"))


VALID_PUSH = _valid_push()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two key pairs made by the real CLI: ``trusted`` and ``other``."""
    root = tmp_path_factory.mktemp("keys")
    for name in ("trusted", "other"):
        proc = run_train("keygen", "--out", root / name)
        assert proc.returncode == 0, proc.stderr
    return {name: (root / name / "signing.key", root / name / "signing.pub")
            for name in ("trusted", "other")}


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.int8.onnx"
    path.write_bytes(tiny_model())
    return path


def trusted(keys, *names):
    return signing.load_trusted_keys(keys[n][1] for n in names)


# --- keygen -------------------------------------------------------------------------------


def test_keygen_file_modes_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "k"
    proc = run_train("keygen", "--out", out)
    assert proc.returncode == 0, proc.stderr
    key, pub = out / "signing.key", out / "signing.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    first_key_id = signing.load_public_key(pub).key_id
    assert first_key_id in proc.stdout

    before = key.read_bytes()
    again = run_train("keygen", "--out", out)
    assert again.returncode == 1
    assert "already exists" in again.stderr and "--force" in again.stderr
    assert key.read_bytes() == before

    forced = run_train("keygen", "--out", out, "--force")
    assert forced.returncode == 0, forced.stderr
    assert key.read_bytes() != before
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert signing.load_public_key(pub).key_id != first_key_id


# --- sign / verify ------------------------------------------------------------------------


def test_sign_verify_round_trip(keys, model_file):
    proc = run_train("sign", model_file, "--key", keys["trusted"][0])
    assert proc.returncode == 0, proc.stderr
    sig_path = model_file.with_name("model.int8.onnx.sig")
    doc = json.loads(sig_path.read_text())
    assert doc["name"] == "tiny" and doc["version"] == "1.0.0"
    assert doc["file"] == "model.int8.onnx" and doc["size"] == model_file.stat().st_size
    assert abs(doc["signed_at"] - time.time()) < 60

    verified = signing.verify_file(model_file, None, trusted(keys, "other", "trusted"))
    assert verified.model == model_file.read_bytes()
    assert verified.key.source == str(keys["trusted"][1])
    assert verified.sha256 == hashlib.sha256(model_file.read_bytes()).hexdigest()


def test_tampered_model_is_rejected(keys, model_file):
    assert run_train("sign", model_file, "--key", keys["trusted"][0]).returncode == 0
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    model_file.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match="sha256 .* is not the signed") as err:
        signing.verify_file(model_file, None, trusted(keys, "trusted"))
    assert err.value.reason == "sha256_mismatch"


def test_wrong_key_is_rejected_naming_both_keys(keys, model_file):
    assert run_train("sign", model_file, "--key", keys["other"][0]).returncode == 0
    good = trusted(keys, "trusted")
    with pytest.raises(SignatureError, match="not trusted") as err:
        signing.verify_file(model_file, None, good)
    assert err.value.reason == "no_trusted_key"
    assert good[0].key_id in str(err.value)
    assert signing.load_public_key(keys["other"][1]).key_id in str(err.value)


def test_altered_statement_is_a_bad_signature(keys, model_file):
    assert run_train("sign", model_file, "--key", keys["trusted"][0]).returncode == 0
    sig_path = signing.sig_path_for(model_file)
    doc = json.loads(sig_path.read_text())
    doc["signed_at"] += 86400  # an attacker trying to make an old model look new
    sig_path.write_text(json.dumps(doc))
    with pytest.raises(SignatureError, match="bad signature") as err:
        signing.verify_file(model_file, None, trusted(keys, "trusted"))
    assert err.value.reason == "bad_signature"


def test_no_trusted_key_means_push_is_off(keys, model_file):
    from trainer.signing import load_private_key, sign_model

    model = model_file.read_bytes()
    payload = signing.encode_push(model, sign_model(model, load_private_key(keys["trusted"][0]),
                                                    "m.onnx"))
    with pytest.raises(SignatureError, match="no trusted key is configured") as err:
        signing.verify_push(payload, [])
    assert err.value.reason == "no_trusted_key"


def test_missing_signature_file_says_how_to_sign(keys, model_file):
    with pytest.raises(SignatureError, match="sigmoid-train sign") as err:
        signing.verify_file(model_file, None, trusted(keys, "trusted"))
    assert err.value.reason == "malformed"


def test_bad_trusted_key_file_is_a_clear_error(tmp_path, keys):
    not_a_key = tmp_path / "x.pub"
    not_a_key.write_text("hello\n")
    with pytest.raises(SignatureError, match="not a PEM public key") as err:
        signing.load_public_key(not_a_key)
    assert err.value.reason == "bad_key"
    with pytest.raises(SignatureError, match="cannot read trusted key"):
        signing.load_public_key(tmp_path / "missing.pub")
    # A private key where a public one belongs is refused too.
    with pytest.raises(SignatureError, match="not a PEM public key"):
        signing.load_public_key(keys["trusted"][0])


def test_replayed_older_model_is_refused(keys):
    from trainer.signing import load_private_key, sign_model

    key = load_private_key(keys["trusted"][0])
    old = sign_model(tiny_model("1.0.0"), key, "m.onnx", signed_at=1_700_000_000)
    new = sign_model(tiny_model("2.0.0"), key, "m.onnx", signed_at=1_700_000_100)
    signing.check_not_older(new, old)
    signing.check_not_older(old, None)
    with pytest.raises(SignatureError, match="older than the model in use") as err:
        signing.check_not_older(old, new)
    assert err.value.reason == "replay"
    # Re-signing the old model is the deliberate way back, and it passes.
    resigned = sign_model(tiny_model("1.0.0"), key, "m.onnx", signed_at=1_700_000_200)
    signing.check_not_older(resigned, new)


def test_push_payload_round_trip_and_size_bound(keys):
    from trainer.signing import load_private_key, sign_model

    model = tiny_model()
    sig = sign_model(model, load_private_key(keys["trusted"][0]), "dir/m.onnx")
    payload = signing.encode_push(model, sig)
    assert payload.startswith(signing.PUSH_MAGIC) and payload.endswith(model)
    push = signing.decode_push(payload)
    assert push.model == model and push.signature == sig and sig.file == "m.onnx"
    with pytest.raises(SignatureError, match="over the limit") as err:
        signing.decode_push(payload, max_bytes=len(payload) - 1)
    assert err.value.reason == "too_large"
    with pytest.raises(SignatureError, match="truncated") as err:
        signing.decode_push(payload[:-1])
    assert err.value.reason == "malformed"


# --- push ---------------------------------------------------------------------------------


def sub_retained(broker, topic, extra=(), timeout=10) -> bytes:
    """The retained payload on ``topic``, read raw by the real ``mosquitto_sub`` (-N)."""
    proc = subprocess.run(
        [require("mosquitto_sub"), "-h", broker.host, "-p", str(broker.port), "-t", topic,
         "-q", "1", "-C", "1", "-N", "-W", str(timeout), *extra],
        capture_output=True, timeout=timeout + 5)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_push_over_plain_broker_arrives_intact(broker, keys, model_file):
    with Collector(broker, TOPIC) as collector:
        proc = run_train("push", model_file, "--broker", broker.url, "--node", NODE,
                         "--key", keys["trusted"][0], "--retain")
        assert proc.returncode == 0, proc.stderr
        assert f"to {TOPIC}" in proc.stdout
        msg = collector.get()
    # --retain: a subscriber that comes later still gets it (read by mosquitto_sub).
    raw = sub_retained(broker, TOPIC)
    assert msg.qos == 1 and msg.topic == TOPIC and not msg.retain
    for payload in (msg.payload, raw):
        verified = signing.verify_push(payload, trusted(keys, "trusted"))
        assert verified.model == model_file.read_bytes()
        assert verified.signature.name == "tiny"


@pytest.fixture
def tls_broker(make_secure_broker):
    return make_secure_broker(
        users={"trainer": "s3cret-train", "watcher": "w4tch", "sensor": "s3nsor"},
        acl={"trainer": [f"write sigmoid-edge/{NODE}/model"],
             "watcher": ["read sigmoid-edge/#"],
             "sensor": ["write sensors/#"]},
    )


def test_push_over_tls_with_password_arrives_intact(tls_broker, keys, model_file):
    sb = tls_broker
    with Collector(sb.broker, TOPIC, **sb.paho_kwargs("watcher")) as collector:
        # password from the environment
        proc = run_train("push", model_file, "--broker", sb.url, "--node", NODE,
                         "--key", keys["trusted"][0], "--username", "trainer",
                         "--tls-ca", sb.tls.ca_cert,
                         env={"SIGMOID_EDGE_PASSWORD": sb.users["trainer"]})
        assert proc.returncode == 0, proc.stderr
        first = collector.get()
        # password from a file
        proc = run_train("push", model_file, "--broker", sb.url, "--node", NODE,
                         "--key", keys["trusted"][0], "--username", "trainer",
                         "--tls-ca", sb.tls.ca_cert, "--retain",
                         "--password-file", sb.password_file_for("trainer"))
        assert proc.returncode == 0, proc.stderr
        second = collector.get()
    raw = sub_retained(sb.broker, TOPIC, sb.client_args("watcher"))
    for payload in (first.payload, second.payload, raw):
        verified = signing.verify_push(payload, trusted(keys, "trusted"))
        assert verified.model == model_file.read_bytes()


def test_push_with_bad_password_fails_clearly_and_fast(tls_broker, keys, model_file):
    sb = tls_broker
    start = time.monotonic()
    proc = run_train("push", model_file, "--broker", sb.url, "--node", NODE,
                     "--key", keys["trusted"][0], "--username", "trainer",
                     "--tls-ca", sb.tls.ca_cert, env={"SIGMOID_EDGE_PASSWORD": "wrong"})
    assert proc.returncode == 1
    assert "refused the connection" in proc.stderr
    assert "SIGMOID_EDGE_PASSWORD" in proc.stderr  # says what to check
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start < 15  # one attempt, no retry loop
    # and the broker saw exactly one refused attempt
    assert sb.broker.log().count("not authorised") == 1


def test_push_denied_by_acl_fails_clearly(tls_broker, keys, model_file):
    sb = tls_broker
    with Collector(sb.broker, "sigmoid-edge/#", **sb.paho_kwargs("watcher")) as collector:
        proc = run_train("push", model_file, "--broker", sb.url, "--node", NODE,
                         "--key", keys["trusted"][0], "--username", "sensor",
                         "--tls-ca", sb.tls.ca_cert, env={"SIGMOID_EDGE_PASSWORD": "s3nsor"})
        assert proc.returncode == 1
        assert "refused the model" in proc.stderr and "ACL" in proc.stderr
        with pytest.raises(Exception):  # noqa: B017 - queue.Empty: nothing was delivered
            collector.get(timeout=1)


def test_push_with_unknown_ca_fails_clearly(tls_broker, keys, model_file, tmp_path):
    from tests.tls_helpers import make_tls_files

    stranger = make_tls_files(tmp_path / "other-pki")
    proc = run_train("push", model_file, "--broker", tls_broker.url, "--node", NODE,
                     "--key", keys["trusted"][0], "--username", "trainer",
                     "--tls-ca", stranger.ca_cert, env={"SIGMOID_EDGE_PASSWORD": "s3cret-train"})
    assert proc.returncode == 1
    assert "TLS certificate" in proc.stderr and "--tls-ca" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (("--broker", "mqtt://127.0.0.1:1", "--node", NODE), "cannot connect to the broker"),
    (("--broker", "mqtt://u:pw@127.0.0.1:1883", "--node", NODE), "credentials in the broker URL"),
    (("--broker", "http://127.0.0.1", "--node", NODE), "mqtt:// or mqtts://"),
    (("--broker", "mqtt://127.0.0.1", "--node", "a/#"), "one topic level"),
    (("--broker", "mqtt://127.0.0.1", "--node", NODE, "--tls-ca", "ca.crt"), "mqtts://"),
])
def test_push_bad_arguments_fail_clearly(keys, model_file, args, message):
    proc = run_train("push", model_file, "--key", keys["trusted"][0], *args, timeout=30)
    assert proc.returncode == 1, proc.stdout
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_password_is_never_a_command_line_argument(model_file, keys):
    proc = run_train("push", model_file, "--broker", "mqtt://127.0.0.1", "--node", NODE,
                     "--key", keys["trusted"][0], "--password", "x")
    assert proc.returncode == 2 and "unrecognized arguments: --password" in proc.stderr


def test_written_push_verifies_again_after_restart(keys, tmp_path):
    from trainer.signing import load_private_key, sign_model

    model = tiny_model("3.0.0")
    payload = signing.encode_push(
        model, sign_model(model, load_private_key(keys["trusted"][0]), "m.onnx"))
    verified = signing.verify_push(payload, trusted(keys, "trusted"))
    target = tmp_path / "model.int8.onnx"
    target.write_bytes(b"the previous model")
    sig_path = signing.write_verified(verified, target)
    assert sig_path == tmp_path / "model.int8.onnx.sig"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx",
                                                          "model.int8.onnx.sig"]
    again = signing.verify_file(target, None, trusted(keys, "trusted"))
    assert again.model == model and again.signature == verified.signature


def test_edge_reads_pushes_without_cryptography(keys):
    # The Pi core has no cryptography: framing works, key loading says what to install.
    code = textwrap.dedent(f"""
        import sys
        sys.modules["cryptography"] = None
        from edge import signing
        push = signing.decode_push(bytes.fromhex({VALID_PUSH.hex()!r}))
        print(push.signature.name)
        try:
            signing.load_public_key({str(keys["trusted"][1])!r})
        except signing.SignatureError as exc:
            print(exc.reason, exc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    name, error = proc.stdout.splitlines()
    assert name == "tiny"
    assert error.startswith("unavailable") and "pip install 'sigmoid-edge[signing]'" in error


def test_push_a_model_signed_elsewhere(broker, keys, model_file, tmp_path):
    assert run_train("sign", model_file, "--key", keys["trusted"][0]).returncode == 0
    sig_path = signing.sig_path_for(model_file)
    with Collector(broker, TOPIC) as collector:
        proc = run_train("push", model_file, "--sig", sig_path, "--broker", broker.url,
                         "--node", NODE)
        assert proc.returncode == 0, proc.stderr
        verified = signing.verify_push(collector.get().payload, trusted(keys, "trusted"))
    # the very signature that was made offline, not a new one
    assert verified.signature == signing.parse_signature(sig_path.read_bytes())
    other = tmp_path / "other.onnx"
    other.write_bytes(tiny_model("9.9.9"))
    proc = run_train("push", other, "--sig", sig_path, "--broker", broker.url, "--node", NODE)
    assert proc.returncode == 1 and "is not a signature of" in proc.stderr


def test_verify_push_refuses_replay_of_an_older_push(keys):
    from trainer.signing import load_private_key, sign_model

    key = load_private_key(keys["trusted"][0])
    pushes = {}
    for version, signed_at in (("1", 1_700_000_000), ("2", 1_700_000_500)):
        model = tiny_model(version)
        pushes[version] = signing.encode_push(
            model, sign_model(model, key, "m.onnx", signed_at=signed_at))
    good = trusted(keys, "trusted")
    running = signing.verify_push(pushes["2"], good).signature
    assert signing.verify_push(pushes["2"], good, current=running).signature == running
    with pytest.raises(SignatureError, match="older than the model in use") as err:
        signing.verify_push(pushes["1"], good, current=running)
    assert err.value.reason == "replay"


def test_verify_bytes_plugs_into_the_model_slot(keys):
    """The daemon's ModelSlot verifier hook takes (data, signature bytes, origin)."""
    from edge.models import ModelError, ModelSlot, load_model
    from trainer.signing import load_private_key, sign_model

    good = trusted(keys, "trusted")
    key = load_private_key(keys["trusted"][0])

    def verifier(data, signature, origin):
        try:
            signing.verify_bytes(data, signature, good, origin=origin)
        except SignatureError as exc:
            raise ModelError(str(exc)) from None

    slot = ModelSlot(load_model(tiny_model("1.0.0")), verifiers=[verifier])
    v2 = tiny_model("2.0.0")
    push = signing.decode_push(signing.encode_push(v2, sign_model(v2, key, "m.onnx")))
    slot.swap(push.model, signature=push.signature.to_json(), origin="mqtt push")
    assert slot.current.info.version == "2.0.0"
    assert slot.current.sha256 == push.signature.sha256

    v3 = tiny_model("3.0.0")
    with pytest.raises(ModelError, match="no signature and --trusted-key is set"):
        slot.swap(v3, signature=None, origin="mqtt push")
    with pytest.raises(ModelError, match="sha256"):
        slot.swap(v3, signature=push.signature.to_json(), origin="mqtt push")
    assert slot.current.info.version == "2.0.0"  # still serving the last good model
