"""What ``sigmoid-train fit`` does: load, choose, fit, export, quantize, measure, write.

Everything is computed in memory first; the four output files are then written to
temporary names in the output directory and renamed into place one after the other,
so a failed fit never leaves a half-written model behind.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data import Dataset
from trainer.features.registry import DEFAULT_CANDIDATES
from trainer.metrics import scores
from trainer.pipeline import Pipeline
from trainer.selection import (
    DEFAULT_LATENCY_BUDGET_US,
    NETWORK_CANDIDATES,
    TooFewWindows,
    select,
    with_budget,
)

log = logging.getLogger(__name__)

OUTPUT_FILES = ("model.onnx", "model.int8.onnx", "report.json", "report.png")


@dataclass
class FitOptions:
    """The knobs of ``sigmoid-train fit`` (``None`` = choose by validation)."""

    features: list[str] | None = None
    hidden_layers: tuple[int, ...] | None = None
    seed: int = 0
    name: str | None = None
    version: str = "1"
    network_params: dict[str, Any] = field(default_factory=dict)
    network_factory: Any = None
    quantization_variants: list[str] | None = None
    # `fit --anomaly DETECTOR`: the classifier also carries an anomaly score.
    anomaly: str | None = None
    # `fit --pretrain rbm [--unlabelled FILE]`: RBM pretraining of the final network (the
    # selection of features and layers runs without it), on these extra windows too.
    pretrain: str | None = None
    unlabelled: np.ndarray | None = None
    # Batch-1 latency (us, measured here) a chosen feature set may cost; 0: no budget.
    latency_budget_us: float = DEFAULT_LATENCY_BUDGET_US


def fit(train: Dataset, test: Dataset | None, options: FitOptions) -> dict[str, Any]:
    """Fit and measure everything; return the in-memory artefacts and the report.

    Returns
    -------
    dict
        ``pipeline``, ``float_model``, ``int8_model`` (onnx.ModelProto), ``report``
        (JSON-able dict) and ``png`` (bytes).
    """
    from trainer import quantize
    from trainer.export import build_model
    from trainer.report import figure_png

    t_start = time.perf_counter()
    feature_sets = [options.features] if options.features else list(DEFAULT_CANDIDATES)
    feature_sets = with_budget(feature_sets, options.latency_budget_us)
    if options.hidden_layers is not None:
        networks = [{**NETWORK_CANDIDATES[0], "hidden_layers": options.hidden_layers}]
    else:
        networks = list(NETWORK_CANDIDATES)
    networks = [{**n, **options.network_params} for n in networks]
    selection: dict[str, Any] = {"method": "none: a single setting was given"}
    best, fitted = None, {}
    if len(feature_sets) * len(networks) > 1:
        t0 = time.perf_counter()
        timed = len(feature_sets) > 1 and options.latency_budget_us
        try:
            best, table = select(train.X, train.y, feature_sets, networks, seed=options.seed,
                                 network_factory=options.network_factory,
                                 latency_of=functools.partial(_latency_us, train, options.seed)
                                 if timed else None,
                                 latency_budget_us=options.latency_budget_us,
                                 fitted_out=fitted)
        except TooFewWindows as exc:
            log.warning("using the first default setting without validation: %s", exc)
            selection = {"method": f"none: {exc}; the first candidate was used"}
    if best is not None:
        selection = {"method": f"stratified {table[0]['folds']}-fold cross-validation on the "
                               "training windows" if table[0]["folds"] > 1 else
                               "stratified 25% hold-out of the training windows",
                     "candidates": table, "time_s": round(time.perf_counter() - t0, 3)}
        if timed:
            selection["latency_budget_us"] = options.latency_budget_us
        features = best["features"]
        params = {k: v for k, v in best.items() if k in networks[0]}
    else:
        features, params = list(feature_sets[0]), dict(networks[0])
    hidden = tuple(params.pop("hidden_layers", ()))

    t0 = time.perf_counter()
    factory = options.network_factory
    if options.pretrain:
        params["pretrain"] = options.pretrain
    if options.anomaly:
        from trainer.anomaly import WithAnomaly

        factory = functools.partial(WithAnomaly, detector=options.anomaly,
                                    base_factory=options.network_factory)
    pipeline = Pipeline(features, hidden_layers=hidden, random_state=options.seed,
                        network_params=params, network_factory=factory)
    pipeline.fit(train.X, train.y, unlabelled=options.unlabelled,
                 families=fitted.get(tuple(features)))
    fit_time = time.perf_counter() - t0
    labels = [str(c) for c in pipeline.classes_]

    name = options.name or train.summary.get("problem") or Path(train.source).stem
    training = {k: v for k, v in train.summary.items() if k != "class_counts"}
    training["class_counts"] = train.summary.get("class_counts")
    common = dict(channels=list(train.channels), window=train.window, hop=train.hop,
                  name=name, version=options.version, sample_rate_hz=train.sample_rate_hz,
                  training=training)
    float_model = build_model(pipeline, **common)
    quant_source = build_model(pipeline, fold_scaling=False, **common)

    t0 = time.perf_counter()
    int8_model, qreport = quantize.choose(
        quant_source, train.X, train.X, train.y, labels,
        candidates=options.quantization_variants, reference_model=float_model)
    quant_time = time.perf_counter() - t0

    float_sess, int8_sess = quantize.session(float_model), quantize.session(int8_model)
    metrics: dict[str, Any] = {"float": {}, "int8": {}}
    agreement = {}
    for split, data in (("train", train), ("test", test)):
        if data is None:
            continue
        pf = quantize.run(float_sess, data.X).argmax(axis=1)
        pq = quantize.run(int8_sess, data.X).argmax(axis=1)
        metrics["float"][split] = scores(data.y, np.array(labels)[pf], labels)
        metrics["int8"][split] = scores(data.y, np.array(labels)[pq], labels)
        agreement[split] = float((pf == pq).mean())
    probe = (test or train).X[0]
    latency = {kind: {"batch1_us": round(quantize.latency_us(s, probe, 1), 2),
                      "per_window_batch64_us": round(quantize.latency_us(s, probe, 64) / 64, 3)}
               for kind, s in (("float", float_sess), ("int8", int8_sess))}
    shown = "test" if test is not None else "train"
    report = {
        "name": name,
        "version": options.version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {"train": train.summary, "test": test.summary if test else None},
        "parameters": {
            "features": list(features),
            "hidden_layers": list(hidden),
            "network": {k: v for k, v in params.items()},
            "seed": options.seed,
            "window": train.window,
            "hop": train.hop,
            "channels": list(train.channels),
            "sample_rate_hz": train.sample_rate_hz,
            "n_features": pipeline.n_features_,
            "selection": selection,
        },
        "fit_time_s": round(fit_time, 3),
        "quantization_time_s": round(quant_time, 3),
        "total_time_s": None,
        "metrics": metrics,
        "int8_float_agreement": agreement,
        "sizes": {"model.onnx": len(float_model.SerializeToString()),
                  "model.int8.onnx": len(int8_model.SerializeToString())},
        "latency": {"threads": 1, **latency},
        "pruning": [f.pruning_ for f in pipeline.families_ if hasattr(f, "pruning_")],
        "quantization": qreport,
    }
    net = pipeline.network_
    png = figure_png(list(getattr(net, "loss_curve_", [])),
                     np.array(metrics["float"][shown]["confusion"]), labels,
                     title=f"{name}: {', '.join(features)}; hidden {list(hidden)}",
                     confusion_title=f"{shown} confusion (float), accuracy "
                                     f"{metrics['float'][shown]['accuracy']:.3f}",
                     pruning=report["pruning"])
    if options.anomaly:
        from trainer.unsupervised import carried_anomaly_report

        report["anomaly"] = carried_anomaly_report(
            pipeline, float_sess, int8_sess, {"train": train, "test": test})
    report["total_time_s"] = round(time.perf_counter() - t_start, 3)
    return {"pipeline": pipeline, "float_model": float_model, "int8_model": int8_model,
            "report": report, "png": png}


def _latency_us(train: Dataset, seed: int, features, families=None) -> float:
    """Batch-1 latency (us of CPU, float, 1 thread) of an exported model with these features.

    The network is logistic regression after one epoch: its weights do not change the time,
    and the features dominate it (a hidden layer of 32 adds about 1 us).
    """
    import warnings

    from trainer import quantize
    from trainer.export import build_model

    pipeline = Pipeline(list(features), random_state=seed, network_params={"max_epochs": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch does not converge, on purpose
        pipeline.fit(train.X, train.y, families=families)
    model = build_model(pipeline, channels=list(train.channels), window=train.window,
                        hop=train.hop, name="latency-probe", version="0")
    return quantize.cpu_latency_us(quantize.session(model), train.X[0])


def write_outputs(out_dir, result: dict[str, Any]) -> dict[str, Path]:
    """Write the four files: all to temporary names first, then renamed into place."""
    payloads = {
        "model.onnx": result["float_model"].SerializeToString(),
        "model.int8.onnx": result["int8_model"].SerializeToString(),
        "report.json": (json.dumps(result["report"], indent=2, default=_json_default)
                        + "\n").encode(),
        "report.png": result["png"],
    }
    return write_files(out_dir, payloads)


def write_files(out_dir, payloads: dict[str, bytes]) -> dict[str, Path]:
    """Write ``{file name: bytes}`` into ``out_dir``: all to temporary names, then renamed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staged: dict[str, str] = {}
    try:
        for name, data in payloads.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out)
            staged[name] = tmp
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        paths = {}
        for name, tmp in staged.items():
            os.replace(tmp, out / name)
            paths[name] = out / name
        return paths
    finally:
        for tmp in staged.values():
            if os.path.exists(tmp):
                os.unlink(tmp)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")
