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


@pytest.mark.slow
def test_the_trainer_emits_only_supported_ops():
    """Every family, head and int8 variant the trainer can export stays within
    ``SUPPORTED_OPS``: the list the daemon's allow-list and the numpy runtime share."""
    pytest.importorskip("onnx", reason="the trainer exports with onnx (not on a 32-bit ARM board)")
    import functools

    import numpy as np

    from edge.tools import synthetic
    from trainer import quantize
    from trainer.anomaly import WithAnomaly
    from trainer.data import Dataset
    from trainer.export import build_model
    from trainer.pipeline import Pipeline
    from trainer.unsupervised import fit_anomaly, fit_clusters

    X, y = synthetic.make_windows(n_per_class=6, window=16, channels=3, seed=1)
    common = dict(channels=["x", "y", "z"], window=16, hop=16, name="ops", version="1")
    models = []
    binary = np.where(y == y[0], "a", "b")
    for features, labels, factory in [
        (("stats", "diff_stats", "spectral", "diff_spectral", "raw", "diff_raw"), y, None),
        (("conv",), y, None),
        (("stats",), binary, None),
        (("stats",), y, functools.partial(WithAnomaly, detector="kmeans")),
    ]:
        pipe = Pipeline(features, hidden_layers=(4,), random_state=0,
                        network_factory=factory).fit(X, labels)
        source = build_model(pipe, fold_scaling=False, **common)
        models += [build_model(pipe, **common), source]
        models += [quantize.build_variant(source, name, X) for name in quantize.variant_names()
                   if name != "dynamic"]  # measured for the report, never shipped
    data = Dataset(X, np.full(len(X), ""), ["x", "y", "z"], 16, 16, 100.0, "ops.csv", {})
    models += [fit_anomaly(data, detector=d)["model"] for d in ("autoencoder", "kmeans")]
    models.append(fit_clusters(data, n_clusters=2)["model"])
    used = set().union(*(contract.model_ops(m.SerializeToString()) for m in models))
    assert used <= contract.SUPPORTED_OPS, sorted(used - contract.SUPPORTED_OPS)
    assert ("", "Loop") not in contract.SUPPORTED_OPS
