"""Trainer-made models of every kind, for the numpy-runtime parity tests and benchmarks.

:func:`parity_models` fits small pipelines on synthetic windows and exports what the trainer
can ship: every feature family (stats, spectral, raw and their first-difference views,
conv and diff_conv, the pruned pool), hidden layers, ``fit --anomaly`` (autoencoder),
``fit-anomaly`` with k-means, ``fit-cluster``, each float, and the int8 variants
``quantize.choose`` picks among (static QDQ/QOperator per tensor/channel, whole graph or
network only, and weight-only).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from edge.tools import synthetic

WINDOW, CHANNELS = 64, 3
COMMON = dict(channels=["x", "y", "z"], window=WINDOW, hop=WINDOW, version="1")
# (name, feature specs, hidden layers, extra): the pipelines the parity tests cover.
PIPELINES = (
    ("stats_spectral", ("stats", "diff_stats", "spectral", "diff_spectral"), (8,), None),
    ("raw_stats", ("raw", "stats"), (), None),
    ("conv", ("conv", "diff_conv", "stats"), (), None),
    ("pruned_conv", ("conv:pool=840:keep=32",), (), None),
    ("with_anomaly", ("stats", "spectral"), (6,), "anomaly"),
    ("kmeans_anomaly", ("stats", "spectral"), (), "kmeans"),
    ("clusters", ("stats",), (), "clusters"),
)


def windows(n_per_class: int = 12, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    return synthetic.make_windows(n_per_class=n_per_class, window=WINDOW, channels=CHANNELS,
                                  seed=seed)


def fit_pipeline(features, hidden, extra, X, y):
    """A fitted :class:`trainer.pipeline.Pipeline` of the given kind."""
    from trainer.anomaly import ClusterNetwork, WithAnomaly
    from trainer.pipeline import Pipeline
    from trainer.unsupervised import _anomaly_factory

    factory = None
    if extra == "anomaly":
        factory = functools.partial(WithAnomaly, detector="autoencoder")
    elif extra == "kmeans":
        factory = functools.partial(_anomaly_factory, detector="kmeans", quantile=0.99,
                                    n_clusters=3)
        y = np.full(len(X), "normal")
    elif extra == "clusters":
        factory = lambda hidden, seed: ClusterNetwork(hidden, seed, n_clusters=3)  # noqa: E731
        y = np.full(len(X), "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small data: convergence warnings are expected
        return Pipeline(features, hidden_layers=hidden, random_state=0,
                        network_factory=factory).fit(X, y)


def parity_models(variants=None, pipelines=PIPELINES, n_per_class: int = 12):
    """``{(pipeline, variant): serialized model}`` plus the windows they were fitted on.

    ``variant`` is ``"float"`` or an int8 variant name; int8 variants are built for the
    classifiers (the unsupervised models ship float only, as ``fit-anomaly`` and
    ``fit-cluster`` write them). ``variants`` defaults to every variant ``choose`` may pick.
    """
    from trainer import quantize
    from trainer.export import build_model

    if variants is None:
        variants = [v for v in quantize.variant_names() if v != "dynamic"]
    X, y = windows(n_per_class)
    out = {}
    for name, features, hidden, extra in pipelines:
        pipe = fit_pipeline(features, hidden, extra, X, y)
        out[(name, "float")] = build_model(pipe, name=name, **COMMON).SerializeToString()
        if extra in ("kmeans", "clusters"):
            continue
        source = build_model(pipe, name=name, fold_scaling=False, **COMMON)
        for v in variants:
            out[(name, v)] = quantize.build_variant(source, v, X).SerializeToString()
    return out, X
