"""What ``sigmoid-train fit`` does, as steps: select, train, export and quantize, measure,
report (:func:`fit` runs them in order and returns a :class:`FitResult`), then write.

Everything is computed in memory first; the four output files are then written to
temporary names in the output directory and renamed into place one after the other,
so a failed fit never leaves a half-written model behind.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge.atomic import write_files
from trainer import sessions
from trainer.data import Dataset
from trainer.features.registry import PRUNED_CONV, default_candidates
from trainer.metrics import scores
from trainer.pipeline import Pipeline
from trainer.report import report_json
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


@dataclass
class Setting:
    """What :func:`choose_setting` picked: features, layers, network parameters, and how."""

    features: list[str]
    hidden_layers: tuple[int, ...]
    network_params: dict[str, Any]
    selection: dict[str, Any]
    # The selection's fitted families of these features (a pruned conv pool is costly to
    # fit twice); None: train_pipeline fits them.
    families: list | None = None


@dataclass
class Models:
    """The exported float model and the chosen int8 variant (:func:`export_and_quantize`)."""

    float_model: onnx.ModelProto
    int8_model: onnx.ModelProto
    quantization: dict[str, Any]
    quantization_time_s: float


@dataclass
class Measurements:
    """Scores, int8/float agreement and latency of both models (:func:`measure`)."""

    metrics: dict[str, dict[str, Any]]
    agreement: dict[str, float]
    latency: dict[str, dict[str, float]]
    float_session: Any
    int8_session: Any


@dataclass
class FitResult:
    """Everything ``sigmoid-train fit`` computed, in memory; :func:`write_outputs` writes it.

    Attributes
    ----------
    pipeline : Pipeline
        The fitted features + scaling + network.
    float_model, int8_model : onnx.ModelProto
        ``model.onnx`` and ``model.int8.onnx``.
    report : dict
        ``report.json`` (JSON-able).
    png : bytes
        ``report.png``.
    """

    pipeline: Pipeline
    float_model: onnx.ModelProto
    int8_model: onnx.ModelProto
    report: dict[str, Any]
    png: bytes


def fit(train: Dataset, test: Dataset | None, options: FitOptions) -> FitResult:
    """Fit and measure everything: select, train, export and quantize, measure, report.

    Parameters
    ----------
    train : Dataset
        Training windows (the selection's folds come from them too).
    test : Dataset, optional
        Held-out windows, scored with both models.
    options : FitOptions

    Returns
    -------
    FitResult
    """
    t_start = time.perf_counter()
    setting = choose_setting(train, options)
    if options.pretrain:  # the final network only; the selection runs without it
        setting.network_params["pretrain"] = options.pretrain
    pipeline, fit_time = train_pipeline(train, setting, options)
    name = options.name or train.summary.get("problem") or Path(train.source).stem
    models = export_and_quantize(pipeline, train, name, options)
    measured = measure(models, [str(c) for c in pipeline.classes_], train, test)
    report, png = build_report(train, test, options, name, setting, pipeline, fit_time,
                               models, measured)
    report["total_time_s"] = round(time.perf_counter() - t_start, 3)
    return FitResult(pipeline, models.float_model, models.int8_model, report, png)


def choose_setting(train: Dataset, options: FitOptions) -> Setting:
    """Select features and layers by cross-validation, unless the options fix them."""
    feature_sets = [options.features] if options.features else default_candidates(train.window)
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
                                 fitted_out=fitted, prior=_prior(feature_sets))
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
    return Setting(list(features), hidden, params, selection, fitted.get(tuple(features)))


def _prior(feature_sets: list[list[str]]) -> list[str] | None:
    """The pruned conv pool alone, when it is a candidate (see ``selection.PRIOR_Z``)."""
    for features in feature_sets:
        if len(features) == 1 and features[0].startswith(PRUNED_CONV):
            return features
    return None


def train_pipeline(train: Dataset, setting: Setting,
                   options: FitOptions) -> tuple[Pipeline, float]:
    """Fit the final pipeline on every training window; return it and the seconds taken."""
    t0 = time.perf_counter()
    factory = options.network_factory
    if options.anomaly:
        from trainer.anomaly import WithAnomaly

        factory = functools.partial(WithAnomaly, detector=options.anomaly,
                                    base_factory=options.network_factory)
    pipeline = Pipeline(setting.features, hidden_layers=setting.hidden_layers,
                        random_state=options.seed, network_params=setting.network_params,
                        network_factory=factory)
    pipeline.fit(train.X, train.y, unlabelled=options.unlabelled, families=setting.families)
    return pipeline, time.perf_counter() - t0


def export_and_quantize(pipeline: Pipeline, train: Dataset, name: str,
                        options: FitOptions) -> Models:
    """The float ONNX model, and the int8 variant :func:`trainer.quantize.choose` picks."""
    from trainer import quantize
    from trainer.export import build_model

    training = {k: v for k, v in train.summary.items() if k != "class_counts"}
    training["class_counts"] = train.summary.get("class_counts")
    common = dict(channels=list(train.channels), window=train.window, hop=train.hop,
                  name=name, version=options.version, sample_rate_hz=train.sample_rate_hz,
                  training=training)
    float_model = build_model(pipeline, **common)
    quant_source = build_model(pipeline, fold_scaling=False, **common)
    t0 = time.perf_counter()
    int8_model, qreport = quantize.choose(
        quant_source, train.X, train.X, train.y, [str(c) for c in pipeline.classes_],
        candidates=options.quantization_variants, reference_model=float_model)
    return Models(float_model, int8_model, qreport, time.perf_counter() - t0)


def measure(models: Models, labels: list[str], train: Dataset,
            test: Dataset | None) -> Measurements:
    """Scores per split of both models through onnxruntime, their agreement, and latency."""
    float_sess = sessions.session(models.float_model)
    int8_sess = sessions.session(models.int8_model)
    metrics: dict[str, Any] = {"float": {}, "int8": {}}
    agreement = {}
    for split, data in (("train", train), ("test", test)):
        if data is None:
            continue
        pf = sessions.run(float_sess, data.X).argmax(axis=1)
        pq = sessions.run(int8_sess, data.X).argmax(axis=1)
        metrics["float"][split] = scores(data.y, np.array(labels)[pf], labels)
        metrics["int8"][split] = scores(data.y, np.array(labels)[pq], labels)
        agreement[split] = float((pf == pq).mean())
    probe = (test or train).X[0]
    # batch1_us: wall time here, as the machine is now; batch1_reference_us: the budget's
    # unit (sessions.reference_latency_us), which the load does not move.
    latency = {kind: {"batch1_us": round(sessions.latency_us(s, probe, 1), 2),
                      "batch1_reference_us": round(sessions.reference_latency_us(s, probe), 1),
                      "per_window_batch64_us": round(sessions.latency_us(s, probe, 64) / 64, 3)}
               for kind, s in (("float", float_sess), ("int8", int8_sess))}
    return Measurements(metrics, agreement, latency, float_sess, int8_sess)


def build_report(train: Dataset, test: Dataset | None, options: FitOptions, name: str,
                 setting: Setting, pipeline: Pipeline, fit_time: float, models: Models,
                 measured: Measurements) -> tuple[dict[str, Any], bytes]:
    """``report.json`` (without ``total_time_s``'s final value) and ``report.png``."""
    from trainer.report import figure_png

    labels = [str(c) for c in pipeline.classes_]
    metrics = measured.metrics
    shown = "test" if test is not None else "train"
    report = {
        "name": name,
        "version": options.version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {"train": train.summary, "test": test.summary if test else None},
        "parameters": {
            "features": list(setting.features),
            "hidden_layers": list(setting.hidden_layers),
            "network": dict(setting.network_params),
            "seed": options.seed,
            "window": train.window,
            "hop": train.hop,
            "channels": list(train.channels),
            "sample_rate_hz": train.sample_rate_hz,
            "n_features": pipeline.n_features_,
            "selection": setting.selection,
        },
        "fit_time_s": round(fit_time, 3),
        "quantization_time_s": round(models.quantization_time_s, 3),
        "total_time_s": None,
        "metrics": metrics,
        "int8_float_agreement": measured.agreement,
        "sizes": {"model.onnx": len(models.float_model.SerializeToString()),
                  "model.int8.onnx": len(models.int8_model.SerializeToString())},
        "latency": {"threads": 1, **measured.latency},
        "pruning": [f.pruning_ for f in pipeline.families_ if hasattr(f, "pruning_")],
        "quantization": models.quantization,
    }
    net = pipeline.network_
    png = figure_png(list(getattr(net, "loss_curve_", [])),
                     np.array(metrics["float"][shown]["confusion"]), labels,
                     title=f"{name}: {', '.join(setting.features)}; "
                           f"hidden {list(setting.hidden_layers)}",
                     confusion_title=f"{shown} confusion (float), accuracy "
                                     f"{metrics['float'][shown]['accuracy']:.3f}",
                     pruning=report["pruning"],
                     step="L-BFGS iteration" if getattr(net, "solver", "") == "lbfgs"
                     else "epoch")
    if options.anomaly:
        from trainer.unsupervised import carried_anomaly_report

        report["anomaly"] = carried_anomaly_report(
            pipeline, measured.float_session, measured.int8_session,
            {"train": train, "test": test})
    return report, png


def _latency_us(train: Dataset, seed: int, features, families=None) -> float:
    """Batch-1 latency (reference us: :func:`trainer.sessions.reference_latency_us`, float,
    1 thread) of an exported model with these features.

    The network is logistic regression after one epoch: its weights do not change the time,
    and the features dominate it (a hidden layer of 32 adds about 1 us).
    """
    import warnings

    from trainer.export import build_model

    pipeline = Pipeline(list(features), random_state=seed, network_params={"max_epochs": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch does not converge, on purpose
        pipeline.fit(train.X, train.y, families=families)
    model = build_model(pipeline, channels=list(train.channels), window=train.window,
                        hop=train.hop, name="latency-probe", version="0")
    return sessions.reference_latency_us(sessions.session(model), train.X[0])


def write_outputs(out_dir, result: FitResult) -> dict[str, Path]:
    """Write the four files: all to temporary names first, then renamed into place."""
    return write_files(out_dir, {
        "model.onnx": result.float_model.SerializeToString(),
        "model.int8.onnx": result.int8_model.SerializeToString(),
        "report.json": report_json(result.report),
        "report.png": result.png,
    })
