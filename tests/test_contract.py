"""The metadata contract round-trips and rejects bad files with precise messages."""

from __future__ import annotations

import pytest

from edge import contract
from edge.contract import ContractError

GOOD = {
    "labels": ["idle", "run"],
    "channels": ["x", "y", "z"],
    "window": 100,
    "hop": 50,
    "sample_rate_hz": 10.0,
    "name": "motion",
    "version": "3",
    "features": {"families": ["stats"]},
}


def test_round_trip():
    props = contract.encode_metadata(GOOD)
    assert props["labels"] == '["idle", "run"]' and props["name"] == "motion"
    info = contract.decode_metadata(props)
    assert info.labels == ("idle", "run")
    assert info.channels == ("x", "y", "z")
    assert (info.window, info.hop, info.sample_rate_hz) == (100, 50, 10.0)
    assert info.extra == {"features": {"families": ["stats"]}}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("labels", "[]", "non-empty JSON list"),
        ("labels", '["a", "a"]', "duplicate"),
        ("window", "0", "positive integer"),
        ("hop", '"ten"', "positive integer"),
        ("sample_rate_hz", "-1", "positive number"),
    ],
)
def test_bad_values_are_named(key, value, message):
    props = contract.encode_metadata(GOOD)
    props[key] = value
    with pytest.raises(ContractError, match=f"{key}.*{message}|{message}.*{key}"):
        contract.decode_metadata(props)


def test_missing_key_is_named():
    props = contract.encode_metadata(GOOD)
    del props["channels"]
    with pytest.raises(ContractError, match="channels"):
        contract.decode_metadata(props)
