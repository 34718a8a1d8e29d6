"""Fuzz the model-push decoder: no input crashes it, every rejection is a clear error.

``FUZZ_EXAMPLES`` sets the number of examples per test (``make fuzz`` runs 100k).
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import signing
from edge.signing import REASONS, SignatureError

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

MODEL = b"\x08\x09onnx-model-bytes" * 8
VALID_SIG = signing.Signature(
    sha256=__import__("hashlib").sha256(MODEL).hexdigest(), size=len(MODEL), file="m.onnx",
    name="tiny", version="1", signed_at=1_700_000_000, key_id="0" * 16, signature=bytes(64))
VALID = signing.encode_push(MODEL, VALID_SIG)


def decode_or_clear_error(payload: bytes) -> None:
    try:
        push = signing.decode_push(payload, max_bytes=4096)
    except SignatureError as exc:
        assert exc.reason in REASONS
        assert len(str(exc)) > 20
        return
    # Whatever decodes is self-consistent.
    assert len(push.model) == push.signature.size
    assert len(push.signature.signature) == 64


@pytest.mark.fuzz
@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes(payload):
    decode_or_clear_error(payload)
    decode_or_clear_error(signing.PUSH_MAGIC + payload)


@pytest.mark.fuzz
@FUZZ
@given(st.data())
def test_mutated_valid_push(data):
    payload = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    decode_or_clear_error(bytes(payload[:cut]) if data.draw(st.booleans()) else bytes(payload))


# Flat values (nested ones are slow to generate and hit the same type checks).
scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
           | st.sampled_from(["a" * 64, "A" * 88, "sigmoid-edge-signature/1", "ed25519"]))
json_values = scalars | st.lists(scalars, max_size=3) | st.dictionaries(
    st.text(max_size=4), scalars, max_size=2)


@pytest.mark.fuzz
@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(VALID_SIG.statement()) + ["signature", "x"]),
                       json_values, max_size=12),
       st.booleans())
def test_well_framed_push_with_hostile_header(fields, start_valid):
    doc = json.loads(VALID_SIG.to_json()) if start_valid else {}
    doc.update(fields)
    header = json.dumps(doc).encode()
    payload = signing.PUSH_MAGIC + len(header).to_bytes(4, "big") + header + MODEL
    decode_or_clear_error(payload)


@pytest.mark.fuzz
@FUZZ
@given(st.binary(max_size=300))
def test_verify_push_with_keys_never_crashes(payload):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    keys = [signing.public_key_from_pem(pem)]
    for candidate in (payload, VALID[:40] + payload):
        with pytest.raises(SignatureError) as err:
            signing.verify_push(candidate, keys)
        assert err.value.reason in REASONS
