"""What ``sigmoid-train fit-anomaly`` and ``sigmoid-train cluster`` do.

Both reuse the classifier's pipeline (features -> scaling -> "network" -> one ONNX graph
with contract metadata); the network is replaced by an anomaly detector or by k-means
(:mod:`trainer.anomaly`). Both write ``model.onnx``, ``report.json`` and ``report.png``
to the output directory, atomically.

Only a float model is written: the detectors are tiny (k-means has no MatMul at all, the
autoencoder two small ones), and the threshold is calibrated on float scores, which an
int8 graph would shift. ``report.json`` has the float model's latency.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge import contract
from edge.atomic import write_files
from trainer import sessions
from trainer.anomaly import ANOMALY_LABELS, AnomalyNetwork, ClusterNetwork
from trainer.calibration import DEFAULT_TARGET_FALSE_ALARMS
from trainer.data import Dataset
from trainer.pipeline import Pipeline
from trainer.report import anomaly_png, cluster_png, report_json

# Statistics of the signal and of its first difference catch spikes, drift and stuck
# sensors; 16 spectral bands over up to 64 DFT bins (the classifier's default is 8 bands
# over 24 bins) resolve a change of machine speed: on the synthetic faults at W=128 the
# speed-change AUC rose from 0.92-0.97 to 0.995 (bench/bench_anomaly.py).
DEFAULT_FEATURES = ("stats", "diff_stats", "spectral:bands=16:max_bins=64")
NORMAL_LABEL = "normal"


def auc(normal_scores: np.ndarray, anomaly_scores: np.ndarray) -> float:
    """Area under the ROC curve: the chance that an anomaly scores above a normal window
    (ties count half), from ranks (Mann-Whitney U)."""
    a, b = np.asarray(normal_scores, float), np.asarray(anomaly_scores, float)
    if not len(a) or not len(b):
        return float("nan")
    both = np.concatenate([a, b])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    # average ranks of ties
    sorted_vals = both[order]
    _, start, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    for s, c in zip(start[counts > 1], counts[counts > 1], strict=True):
        ranks[order[s:s + c]] = ranks[order[s:s + c]].mean()
    u = ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2
    return float(u / (len(a) * len(b)))


def _anomaly_factory(hidden_layers, random_state, *, detector, n_clusters,
                     target_false_alarms=DEFAULT_TARGET_FALSE_ALARMS, quantile=None,
                     calibration="blocked", groups=None, **_network_params):
    return AnomalyNetwork(hidden_layers, random_state, detector=detector,
                          target_false_alarms=target_false_alarms, quantile=quantile,
                          calibration=calibration, n_clusters=n_clusters, groups=groups)


def _cluster_factory(hidden_layers, random_state, *, n_clusters, quantile=None,
                     **_network_params):
    return ClusterNetwork(hidden_layers, random_state, n_clusters=n_clusters, quantile=quantile)


def _model_and_latency(pipeline: Pipeline, data: Dataset, name: str, version: str):
    from trainer.export import build_model

    training = {k: v for k, v in data.summary.items()}
    model = build_model(pipeline, channels=list(data.channels), window=data.window,
                        hop=data.hop, name=name, version=version,
                        sample_rate_hz=data.sample_rate_hz, training=training)
    sess = sessions.session(model)
    probe = data.X[0]
    latency = {"threads": 1,
               "batch1_us": round(sessions.latency_us(sess, probe, 1), 2),
               "per_window_batch64_us": round(sessions.latency_us(sess, probe, 64) / 64, 3)}
    return model, sess, latency


def fit_anomaly(train: Dataset, test: Dataset | None = None, *, detector: str = "kmeans",
                features: list[str] | None = None, hidden_layers: tuple[int, ...] = (),
                n_clusters: int | None = None,
                target_false_alarms: float = DEFAULT_TARGET_FALSE_ALARMS,
                quantile: float | None = None, calibration: str = "blocked",
                normal_label: str | None = None, seed: int = 0, name: str | None = None,
                version: str = "1") -> dict[str, Any]:
    """Fit an anomaly model on normal windows; measure it on ``test`` when given.

    Parameters
    ----------
    train : Dataset
        Normal running, in time order per device (``train.groups``). With
        ``normal_label``, only windows with that label are used; otherwise every window is
        taken as normal, whatever its label.
    test : Dataset, optional
        Labelled windows: ``normal_label`` (default ``"normal"``) is normal, every other
        non-empty label an anomaly. Gives AUC, detection and false-alarm rates.
    detector : {"kmeans", "autoencoder"}
        k-means by default: on the later part of real recordings it let through half the
        false alarms of the autoencoder, at the same AUC on the synthetic faults.
    features : list of str, optional
        Feature specs (default :data:`DEFAULT_FEATURES`).
    hidden_layers, n_clusters
        Autoencoder layers / k-means clusters (default: sized from the data).
    target_false_alarms : float
        The threshold is set for this false-alarm rate per window on later normal data.
    quantile : float, optional
        Instead: the threshold is this quantile of a log-normal fitted to the out-of-fold
        normal scores.
    calibration : {"blocked", "shuffled"}
        Out-of-fold scores from contiguous blocks in time per device (the default), or
        from shuffled windows.

    Returns
    -------
    dict
        ``pipeline``, ``model`` (onnx.ModelProto), ``report`` and ``png``.
    """
    t_start = time.perf_counter()
    if normal_label is not None:
        keep = train.y == normal_label
        if not keep.any():
            raise ValueError(f"{train.source}: no window labelled {normal_label!r}; labels "
                             f"are {sorted(set(train.y.tolist()))}")
        train = dataclasses.replace(
            train, X=train.X[keep], y=train.y[keep],
            groups=None if train.groups is None else train.groups[keep])
    features = list(features or DEFAULT_FEATURES)
    factory = functools.partial(_anomaly_factory, detector=detector, quantile=quantile,
                                target_false_alarms=target_false_alarms,
                                calibration=calibration, groups=train.groups,
                                n_clusters=n_clusters)
    t0 = time.perf_counter()
    pipeline = Pipeline(features, hidden_layers=tuple(hidden_layers), random_state=seed,
                        network_factory=factory)
    pipeline.fit(train.X, np.full(len(train.X), ANOMALY_LABELS[0]))
    fit_time = time.perf_counter() - t0
    name = name or train.summary.get("problem") or Path(train.source).stem
    model, sess, latency = _model_and_latency(pipeline, train, name, version)
    det = pipeline.network_.detector_

    (train_scores,) = sessions.run_outputs(sess, train.X, [contract.ANOMALY_OUTPUT])
    report: dict[str, Any] = {
        "name": name,
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "kind": "anomaly",
        "data": {"train": train.summary, "test": test.summary if test else None},
        "parameters": {"detector": detector, "features": features, "seed": seed,
                       "window": train.window, "hop": train.hop,
                       "channels": list(train.channels), "n_features": pipeline.n_features_,
                       "target_false_alarms": None if quantile else target_false_alarms,
                       "quantile": quantile, "calibration": calibration,
                       "normal_label": normal_label},
        "anomaly": det.describe(),
        "threshold": det.threshold_,
        "expected_false_alarm_rate": det.expected_false_alarm_rate_,
        "expected_false_alarm_rate_method": det.describe()["expected_false_alarm_rate_method"],
        "train": {"n": int(len(train_scores)),
                  "flagged": float((train_scores > det.threshold_).mean()),
                  "note": "the final detector scoring its own training windows (optimistic); "
                          "the threshold comes from out-of-fold scores"},
        "fit_time_s": round(fit_time, 3),
        "latency": latency,
        "size_bytes": len(model.SerializeToString()),
    }
    test_scores = None
    if test is not None:
        (test_scores,) = sessions.run_outputs(sess, test.X, [contract.ANOMALY_OUTPUT])
        report["test"] = _test_metrics(test.y, test_scores, det.threshold_,
                                       normal_label or NORMAL_LABEL)
    report["total_time_s"] = round(time.perf_counter() - t_start, 3)
    png = anomaly_png(pipeline.network_.loss_curve_, det.calibration_scores_, test_scores,
                       None if test is None else test.y, det.threshold_,
                       normal_label or NORMAL_LABEL, title=f"{name}: {detector} on "
                       f"{', '.join(features)}",
                       cluster_sizes=report["anomaly"].get("cluster_sizes"))
    return {"pipeline": pipeline, "model": model, "report": report, "png": png}


def _test_metrics(y: np.ndarray, scores: np.ndarray, threshold: float, normal: str) -> dict:
    labelled = y != ""
    is_normal = y == normal
    is_anomaly = labelled & ~is_normal
    flagged = scores > threshold
    out: dict[str, Any] = {
        "n": int(labelled.sum()),
        "normal_windows": int(is_normal.sum()),
        "anomaly_windows": int(is_anomaly.sum()),
        "false_alarm_rate": float(flagged[is_normal].mean()) if is_normal.any() else None,
        "detection_rate": float(flagged[is_anomaly].mean()) if is_anomaly.any() else None,
        "auc": auc(scores[is_normal], scores[is_anomaly]) if is_anomaly.any() else None,
        "by_label": {},
    }
    for label in sorted(set(y[is_anomaly].tolist())):
        rows = y == label
        out["by_label"][label] = {"n": int(rows.sum()),
                                  "detection_rate": float(flagged[rows].mean()),
                                  "auc": auc(scores[is_normal], scores[rows])
                                  if is_normal.any() else None}
    return out


def carried_anomaly_report(pipeline: Pipeline, float_sess, int8_sess,
                           datasets: dict[str, Dataset | None]) -> dict[str, Any]:
    """What ``fit --anomaly`` reports: the detector, and per split the share of windows the
    float and the int8 model flag and how often they agree (the threshold is calibrated on
    float scores; the int8 graph may quantize the detector's inputs)."""
    det = pipeline.network_.detector_
    out: dict[str, Any] = {**det.describe(), "flagged": {}}
    for split, data in datasets.items():
        if data is None:
            continue
        (f,) = sessions.run_outputs(float_sess, data.X, [contract.ANOMALY_OUTPUT])
        (q,) = sessions.run_outputs(int8_sess, data.X, [contract.ANOMALY_OUTPUT])
        ff, fq = f > det.threshold_, q > det.threshold_
        out["flagged"][split] = {"n": int(len(f)), "float": float(ff.mean()),
                                 "int8": float(fq.mean()),
                                 "int8_float_agreement": float((ff == fq).mean())}
    return out


def fit_clusters(data: Dataset, *, n_clusters: int, features: list[str] | None = None,
                 quantile: float | None = None, seed: int = 0, name: str | None = None,
                 version: str = "1") -> dict[str, Any]:
    """k-means on the scaled features of ``data``'s windows, as a model file.

    Returns
    -------
    dict
        ``pipeline``, ``model``, ``report`` (cluster sizes, and the labels found in each
        cluster when ``data`` has labels) and ``png`` (a 2-D projection coloured by cluster).
    """
    t_start = time.perf_counter()
    if not isinstance(n_clusters, int) or n_clusters < 2:
        raise ValueError(f"--k must be an integer >= 2, got {n_clusters!r}")
    if len(data.X) < 2 * n_clusters:
        raise ValueError(f"{data.source}: {len(data.X)} windows are too few for {n_clusters} "
                         "clusters; use a smaller --k, a smaller --hop or more data")
    features = list(features or DEFAULT_FEATURES)
    factory = functools.partial(_cluster_factory, n_clusters=n_clusters, quantile=quantile)
    pipeline = Pipeline(features, random_state=seed, network_factory=factory)
    pipeline.fit(data.X, np.full(len(data.X), ""))
    name = name or data.summary.get("problem") or Path(data.source).stem
    model, sess, latency = _model_and_latency(pipeline, data, name, version)
    (cluster,) = sessions.run_outputs(sess, data.X, ["cluster"])
    net = pipeline.network_
    sizes = np.bincount(cluster, minlength=n_clusters)
    report: dict[str, Any] = {
        "name": name,
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "kind": "clusters",
        "data": data.summary,
        "parameters": {"k": n_clusters, "features": features, "seed": seed,
                       "window": data.window, "hop": data.hop,
                       "channels": list(data.channels), "n_features": pipeline.n_features_},
        "clusters": {f"cluster_{i}": {"windows": int(sizes[i])} for i in range(n_clusters)},
        "kmeans": net.detector_.describe(),
        "threshold": net.detector_.threshold_,
        "latency": latency,
        "size_bytes": len(model.SerializeToString()),
    }
    if (data.y != "").any():
        for i in range(n_clusters):
            labels, counts = np.unique(data.y[cluster == i], return_counts=True)
            report["clusters"][f"cluster_{i}"]["labels"] = {
                str(k) or "(unlabelled)": int(c) for k, c in zip(labels, counts, strict=True)}
    F = pipeline.transform(data.X)
    report["total_time_s"] = round(time.perf_counter() - t_start, 3)
    png = cluster_png(F, cluster, net.kmeans_.cluster_centers_, data.y,
                       title=f"{name}: k-means, k={n_clusters}, {', '.join(features)}")
    return {"pipeline": pipeline, "model": model, "report": report, "png": png}


def write(out_dir, result: dict[str, Any]) -> dict[str, Path]:
    """Write ``model.onnx``, ``report.json`` and ``report.png`` (temp files + renames)."""
    return write_files(out_dir, {"model.onnx": result["model"].SerializeToString(),
                                 "report.json": report_json(result["report"]),
                                 "report.png": result["png"]})
