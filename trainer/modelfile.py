"""``evaluate`` and ``inspect`` an exported model file, through an edge runtime.

Both read what the file says (``edge.contract``): evaluation windows the data the way
the model's metadata describes (its window length, hop and channel order), so a model is
scored exactly as the daemon would run it.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np

from edge import contract
from trainer import sessions


def evaluate(model_path, data_path, batch: int = 256, runtime: str = "auto") -> dict[str, Any]:
    """Accuracy, macro-F1, confusion matrix and ``n`` of a model on a labelled data file.

    ``runtime``: which :mod:`edge.runtime` runs the model (``numpy`` for a parity check
    with what a Pi without onnxruntime computes).
    """
    from edge.runtime import resolve
    from trainer.data import load_dataset
    from trainer.metrics import scores

    runtime = resolve(runtime)
    sess, info = sessions.load(model_path, runtime)
    suffix = Path(data_path).suffix.lower()
    data = load_dataset(data_path, window=info.window, hop=info.hop,
                        channels=list(info.channels) if suffix == ".csv" else None)
    if data.X.shape[2] != len(info.channels):
        raise ValueError(f"{data_path}: the data has {data.X.shape[2]} channel(s), the model "
                         f"expects {len(info.channels)} ({', '.join(info.channels)})")
    probs = sessions.run(sess, data.X, batch)
    pred = np.array(info.labels)[probs.argmax(axis=1)]
    if info.labels == ("normal", "anomaly"):
        # An anomaly model (fit-anomaly): every label other than "normal" is an anomaly.
        data.y = np.where(data.y == "normal", "normal", "anomaly")
    result = scores(data.y, pred, list(info.labels))
    unknown = sorted(set(data.y.tolist()) - set(info.labels))
    result.update({"model": str(model_path), "data": str(data_path),
                   "unknown_labels": unknown, "window": info.window, "runtime": runtime})
    return result


def inspect(model_path) -> dict[str, Any]:
    """Metadata, inputs/outputs, size, op counts and quantization of a model file."""
    import onnx

    sess, info = sessions.load(model_path)
    model = onnx.load(str(model_path))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    return {
        "file": str(model_path),
        "size_bytes": Path(model_path).stat().st_size,
        "name": info.name,
        "version": info.version,
        "labels": list(info.labels),
        "channels": list(info.channels),
        "window": info.window,
        "hop": info.hop,
        "sample_rate_hz": info.sample_rate_hz,
        "inputs": [{"name": i.name, "type": i.type, "shape": i.shape} for i in sess.get_inputs()],
        "outputs": [{"name": o.name, "type": o.type, "shape": o.shape}
                    for o in sess.get_outputs()],
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "nodes": len(model.graph.node),
        "op_counts": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "quantization": info.extra.get(contract.QUANTIZATION),
        "features": info.extra.get(contract.FEATURES),
        "training": info.extra.get(contract.TRAINING),
        "metadata_keys": sorted([contract.LABELS, contract.CHANNELS, contract.WINDOW,
                                 contract.HOP, contract.NAME, contract.VERSION,
                                 *info.extra]),
    }


def format_inspect(d: dict[str, Any]) -> str:
    """A human-readable summary of :func:`inspect`."""
    q = d.get("quantization") or {}
    feats = d.get("features") or {}
    lines = [
        f"{d['file']}: {d['name']} version {d['version']}, {d['size_bytes']} bytes",
        f"  labels    {', '.join(d['labels'])}",
        f"  channels  {', '.join(d['channels'])}",
        f"  window    {d['window']} samples, hop {d['hop']}"
        + (f", {d['sample_rate_hz']} Hz" if d.get("sample_rate_hz") else ""),
    ]
    for kind in ("inputs", "outputs"):
        for io in d[kind]:
            lines.append(f"  {kind[:-1]:9s} {io['name']} {io['type']} {io['shape']}")
    lines.append(f"  opset     {d['opset']}")
    lines.append(f"  nodes     {d['nodes']}: "
                 + ", ".join(f"{op} {n}" for op, n in d["op_counts"].items()))
    if feats:
        lines.append(f"  features  {', '.join(feats.get('specs', []))} "
                     f"({feats.get('n_features')} features), hidden layers "
                     f"{feats.get('hidden_layers')}")
    if q:
        text = q.get("type", "?")
        if q.get("method"):
            text += f" ({q['method']}, agreement with float {q.get('agreement')})"
        lines.append(f"  quantization {text}")
    return "\n".join(lines)
