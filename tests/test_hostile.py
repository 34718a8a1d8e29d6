"""Hostile sensors and hostile models (issue 23), against a real mosquitto.

A publisher on ``sensors/#`` must not be able to undo a signed model, make the daemon
publish something that is not JSON, lose acknowledged samples across ``kill -9``, or hide a
broker backlog; a signed model must not be able to hang the daemon.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge import contract
from edge.models import ModelError, load_model
from edge.payload import PayloadParser, Rejected
from edge.stats import to_json
from tests.daemon_helpers import ROOT, DaemonProcess, running, wait_for
from tests.models import mean_model
from tests.mqtt_helpers import Collector, mosquitto_pub
from tests.test_daemon_anomaly import anomaly_model  # noqa: F401 (a fixture)
from tests.test_model_push import (  # noqa: F401 (keys is a fixture)
    ERRORS,
    MODEL_TOPIC,
    OUT,
    events,
    keys,
    publish,
    push_payload,
    trusted,
)
from trainer.signing import sign_file


def strict(payload: bytes) -> dict:
    """Parse as a strict JSON parser does: NaN and Infinity are errors."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(payload, parse_constant=refuse)


def loop_model(path, iterations: int = 10**12):
    """A contract-following model whose graph loops ``iterations`` times (it hangs)."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [3])])
    nodes = [
        helper.make_node("Loop", ["n", "cond", "v0"], ["v"], body=body),
        helper.make_node("ReduceMean", ["window", "axes"], ["mean"], keepdims=0),
        helper.make_node("Add", ["mean", "v"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [contract.OUTPUT_NAME], axis=-1),
    ]
    inits = [helper.make_tensor("n", TensorProto.INT64, [], [iterations]),
             helper.make_tensor("cond", TensorProto.BOOL, [], [True]),
             helper.make_tensor("v0", TensorProto.FLOAT, [3], [0, 0, 0]),
             helper.make_tensor("axes", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(
        nodes, "loop", [helper.make_tensor_value_info("window", TensorProto.FLOAT,
                                                      [None, 4, 3])],
        [helper.make_tensor_value_info(contract.OUTPUT_NAME, TensorProto.FLOAT, [None, 3])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    meta = contract.encode_metadata({"labels": ["low", "mid", "high"], "channels": ["x", "y", "z"],
                                     "window": 4, "hop": 4, "name": "loop", "version": "9"})
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, path)
    return path


# ------------------------------------------------------------------ inference per window

def test_one_devices_overflow_is_a_counted_rejection_never_a_rollback(
        broker, tmp_path, keys, anomaly_model):  # noqa: F811
    """The issue's attack: 1e19 samples made the (signed, pushed) anomaly model return NaN,
    the batch failed, and the daemon rolled the push back."""
    first = mean_model(tmp_path / "model.onnx", window=32, hop=32, version="1")
    sign_file(first, keys["trusted"][1].with_name("signing.key"))
    pushed = anomaly_model.read_bytes()
    normal = np.random.default_rng(3).normal(0, 0.1, (32, 3)).round(4).tolist()
    with running(broker, first, **trusted(keys, first)) as daemon, \
            Collector(broker, OUT, ERRORS) as out:
        publish(out, MODEL_TOPIC, push_payload(pushed, keys["trusted"][0]))
        assert events(out, 1)[0]["event"] == "model_accepted"
        sha = daemon.slot.current.sha256
        publish(out, "sensors/evil/a", json.dumps({"samples": [[1e19, 1e19, 1e19]] * 32}))
        publish(out, "sensors/good/a", json.dumps({"samples": normal}))
        msgs = out.take(2)
        wait_for(lambda: daemon.stats.window_rejects["inference_failed"] == 1)
        assert daemon.slot.current.sha256 == sha and daemon.updates.counts["rolled_back"] == 0
    docs = {m.topic: strict(m.payload) for m in msgs}
    good = docs["edge/good/classification"]
    assert good["model"]["sha256"] == sha and np.isfinite(good["anomaly_score"])
    error = docs[ERRORS]
    assert error["reason"] == "inference_failed" and error["device"] == "evil"
    assert "edge/evil/classification" not in docs


def test_the_runner_rejects_only_the_failing_windows():
    """Per window, in one batch: the finite rows are published, the others counted."""
    from edge.models import ModelSlot
    from edge.runner import Runner
    from edge.stats import Stats

    model = load_model(square_model_bytes())
    published, rejected = [], []
    runner = Runner(ModelSlot(model), lambda t, p, q: published.append((t, p)), Stats())
    runner.on_window_rejected = lambda reason, detail, device: rejected.append(device)
    windows = np.ones((3, 4, 3), np.float32)
    windows[1] = 3e38  # squares overflow float32: an infinite anomaly score
    runner._classify(windows, ["a", "b", "c"], np.zeros(3), np.ones(3), {})
    assert [t for t, _ in published] == ["edge/a/classification", "edge/c/classification"]
    assert all(np.isfinite(strict(p.encode())["anomaly_score"]) for _, p in published)
    assert rejected == ["b"] and runner.stats.window_rejects == {"inference_failed": 1}


def square_model_bytes() -> bytes:
    """Mean model plus ``anomaly_score`` = mean of squares (overflows for huge inputs)."""
    from trainer.graph import GraphBuilder, float_input

    g = GraphBuilder("square")
    mean = g.op("ReduceMean", ["window", g.const("t", np.array([1], np.int64))],
                name="mean", keepdims=0)
    g.rename(g.op("Softmax", [g.op("MatMul", [mean, g.const("w", np.eye(3, dtype=np.float32))],
                                   name="dense")], name="sm", axis=-1), contract.OUTPUT_NAME)
    sq = g.op("Mul", ["window", "window"], name="sq")
    g.rename(g.op("ReduceMean", [sq, g.const("all", np.array([1, 2], np.int64))], name="ms",
                  keepdims=0), contract.ANOMALY_OUTPUT)
    meta = {"labels": ["a", "b", "c"], "channels": ["x", "y", "z"], "window": 4, "hop": 4,
            "name": "square", "version": "1", "anomaly_threshold": 1.0}
    return g.model([float_input("window", [None, 4, 3])],
                   [float_input(contract.OUTPUT_NAME, [None, 3]),
                    float_input(contract.ANOMALY_OUTPUT, [None])],
                   contract.encode_metadata(meta)).SerializeToString()


def test_every_published_message_is_strict_json():
    doc = {"latency_ms": {"p50": float("nan"), "p99": float("inf")}, "n": [1.0, -float("inf")]}
    assert strict(to_json(doc).encode()) == {"latency_ms": {"p50": None, "p99": None},
                                             "n": [1.0, None]}


# ------------------------------------------------------------------ hostile models

def test_the_op_allow_list_is_what_the_model_parser_reads(tmp_path):
    ops = contract.model_ops(loop_model(tmp_path / "loop.onnx").read_bytes())
    assert ("", "Loop") in ops and ("", "Identity") in ops  # the body's nodes too
    with pytest.raises(ModelError, match="Loop.*allow_ops") as err:
        load_model(tmp_path / "loop.onnx")
    assert err.value.cause == "unsupported_op"
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        load_model(b"\x0a\xff\xff\xff")


def test_a_hanging_model_times_out_and_later_pushes_proceed(broker, tmp_path,
                                                           keys):  # noqa: F811
    first = mean_model(tmp_path / "model.onnx", window=4, hop=4, version="1")
    sign_file(first, keys["trusted"][1].with_name("signing.key"))
    hang = loop_model(tmp_path / "loop.onnx").read_bytes()
    good = mean_model(tmp_path / "v2.onnx", window=4, hop=4, version="2").read_bytes()
    key = keys["trusted"][0]
    settings = trusted(keys, first, allow_ops=["Loop"], model_check_timeout=3.0)
    with running(broker, first, **settings) as daemon, Collector(broker, ERRORS, OUT) as out:
        publish(out, MODEL_TOPIC, push_payload(hang, key))
        timeout = events(out, 1)[0]
        # The worker kept serving while the candidate hung.
        mosquitto_pub(broker, "sensors/d/a", json.dumps({"samples": [[0, 0, 0]] * 4}), qos=1)
        assert strict(out.get().payload)["model"]["version"] == "1"
        publish(out, MODEL_TOPIC, push_payload(good, key))
        accepted = events(out, 1)[0]
        started = time.monotonic()
    assert time.monotonic() - started < 10
    assert timeout["event"] == "model_rejected" and timeout["cause"] == "timeout"
    assert accepted["event"] == "model_accepted" and accepted["model"]["version"] == "2"
    assert daemon.updates.rejected == {"timeout": 1}


def test_sigterm_stops_the_daemon_while_a_model_check_hangs(broker, tmp_path,
                                                            keys):  # noqa: F811
    first = mean_model(tmp_path / "model.onnx", window=4, hop=4, version="1")
    sign_file(first, keys["trusted"][1].with_name("signing.key"))
    hang = loop_model(tmp_path / "loop.onnx").read_bytes()
    args = ("--trusted-key", str(keys["trusted"][1]))
    env = {"SIGMOID_EDGE_ALLOW_OPS": "Loop", "SIGMOID_EDGE_MODEL_CHECK_TIMEOUT": "120"}
    with Collector(broker, ERRORS) as out, \
            DaemonProcess(broker, first, tmp_path, *args, env=env) as d:
        wait_for(lambda: "connected to" in d.log(), timeout=30, what="the daemon")
        # Retained: it reaches the daemon whenever its model subscription is in place.
        out.client.publish(MODEL_TOPIC, push_payload(hang, keys["trusted"][0]), qos=1,
                           retain=True).wait_for_publish(5)
        wait_for(lambda: "checking model" in d.log(), timeout=30, what="the check")
        child = int(d.log().split("checking model")[1].split("pid ")[1].split(")")[0])
        started = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.wait(10) == 0, d.log()
    assert time.monotonic() - started < 10
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the hung check died with the daemon


# ------------------------------------------------------------------ no loss across kill -9

def test_kill_9_loses_no_acknowledged_one_sample_message(broker, tmp_path):
    model = mean_model(tmp_path / "model.onnx", window=4, hop=4)
    args = ("--client-id", "edge-journal", "--qos", "1")

    def send(first: int, last: int) -> None:
        lines = [json.dumps({"x": 0, "y": 0, "z": 0, "ts": 1000 + i / 100})
                 for i in range(first, last)]
        mosquitto_pub(broker, "sensors/j1/a", "\n".join(lines), lines=True, qos=1)

    def probe() -> None:  # a window of another device: its output ends a worker cycle
        mosquitto_pub(broker, "sensors/probe/a", json.dumps({"samples": [[0, 0, 0]] * 4}),
                      qos=1)

    with Collector(broker, "edge/j1/classification", "edge/probe/classification") as out:
        with DaemonProcess(broker, model, tmp_path, *args) as d:
            wait_for(lambda: "connected to" in d.log(), timeout=30, what="the first start")
            send(0, 10)  # two windows and two samples of a third
            probe()
            probe()  # the cycle that took samples 8 and 9 has ended: they are acknowledged
            got = [strict(m.payload) for m in out.take(4)]
            d.proc.kill()
            d.wait()
        send(10, 16)  # queued by the broker while the daemon is down
        with DaemonProcess(broker, model, tmp_path, *args):
            # (the last probe may come again: it was in flight when the daemon died)
            while sum(doc["device"] == "j1" for doc in got) < 4:
                got.append(strict(out.get(timeout=30).payload))
    starts = [round(doc["window_start"], 2) for doc in got if doc["device"] == "j1"]
    assert starts == [1000.0, 1000.04, 1000.08, 1000.12]  # nothing lost, nothing shifted


# ------------------------------------------------------------------ sensors

def test_input_lag_shows_a_backlog_in_stats(broker, tmp_path):
    model = mean_model(tmp_path / "model.onnx", window=4, hop=4)
    old = time.time() - 30  # samples that waited 30 s (in a broker backlog)
    lines = [json.dumps({"x": 0, "y": 0, "z": 0, "ts": old + i / 100}) for i in range(8)]
    with running(broker, model) as daemon, Collector(broker, "sigmoid-edge/+/stats") as out:
        mosquitto_pub(broker, "sensors/lag/a", "\n".join(lines), lines=True, qos=1)
        wait_for(lambda: daemon.stats.classifications == 2)
        daemon.publish_stats()
        snap = strict(out.get().payload)
    assert 29_000 < snap["input_lag_ms"]["p50"] < 60_000
    assert snap["latency_ms"]["p99"] < 10_000  # from receipt: the backlog is invisible there


def test_bad_ts_and_booleans_are_refused_the_same_everywhere(broker, tmp_path):
    model = mean_model(tmp_path / "model.onnx", window=4, hop=4)
    huge = "1" + "0" * 400
    payloads = [
        '{"x": 1, "y": 1, "z": 1, "ts": ' + huge + "}",
        '{"samples": [[1, 1, 1]], "ts": [' + huge + "]}",
        '{"samples": [[1, 1, 1]], "ts": ' + huge + "}",
        '{"samples": [[1, true, 1]]}',
        '[1, true, 1]',
    ]
    with running(broker, model) as daemon:
        mosquitto_pub(broker, "sensors/t/a", "\n".join(payloads), lines=True, qos=1)
        wait_for(lambda: daemon.stats.messages_in == len(payloads))
        assert daemon.stats.rejected == {"bad_ts": 3, "not_a_number": 2}


def test_booleans_in_a_batch_are_not_numbers():
    parser = PayloadParser(("x", "y"))
    with pytest.raises(Rejected, match="true/false") as err:
        parser.parse(b'{"samples": [[1.5, false]]}')
    assert err.value.reason == "not_a_number"
    assert parser.parse(b'{"samples": [[1.5, 2]], "note": "true"}')[0].tolist() == [[1.5, 2]]


# ------------------------------------------------------------------ the command line

@pytest.mark.parametrize("setup, args, expected", [
    (None, ["--broker", "mqtt://[::1"], "broker URL 'mqtt://[::1' is not a valid URL"),
    ({"edge.toml": b'node = "caf\xe9"\n'}, ["--config", "edge.toml"], "is not UTF-8"),
    ({"pw": b"s\xe9cret\n"}, ["--username", "u", "--password-file", "pw"], "is not UTF-8"),
    ({"edge.toml": b"stats_interval = nan\n"}, ["--config", "edge.toml"],
     "stats_interval (config file edge.toml) must be a finite number"),
    ({"edge.toml": b"reconnect_max = inf\n"}, ["--config", "edge.toml"],
     "reconnect_max (config file edge.toml) must be a finite number"),
])
def test_bad_cli_and_config_input_is_one_line_and_a_nonzero_exit(tmp_path, setup, args,
                                                                 expected):
    model = mean_model(tmp_path / "model.onnx")
    for name, data in (setup or {}).items():
        (tmp_path / name).write_bytes(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGMOID_EDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "edge", "run", "--model", str(model),
                           "--check-config", *args], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env=env)
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv", [
    ["sigmoid-edge", "simulate", "--synthetic", "--broker", "mqtt://[::1"],
    ["sigmoid-edge", "record", "--broker", "mqtt://[::1", "--out", "rec.csv"],
    ["sigmoid-train", "push", "model.onnx", "--key", "k", "--node", "n",
     "--broker", "mqtt://localhost", "--password-file", "pw"],
])
def test_the_other_commands_give_one_line_too(tmp_path, argv):
    (tmp_path / "pw").write_bytes(b"s\xe9cret\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGMOID_EDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    module = "edge" if argv[0] == "sigmoid-edge" else "trainer"
    proc = subprocess.run([sys.executable, "-m", module, *argv[1:]], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path, env=env)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_journal_is_bounded_and_survives_a_torn_write(tmp_path):
    from edge.journal import Journal
    from edge.windows import WindowBuffers

    buffers = WindowBuffers(4, 3, 4)
    journal = Journal(tmp_path / "j", max_bytes=4096)
    for i in range(998):  # 998 cycles of one sample from each of 3 devices
        for d in range(3):
            values = np.full((1, 3), i, np.float32)
            buffers.push(f"d{d}", values, np.array([i / 100]), True)
            journal.record(f"d{d}", values, np.array([i / 100]), True)
        buffers.take()
        journal.commit(buffers)
        assert journal.size <= 4096 + 3 * 100  # a snapshot, then at most one cycle over
    journal.close()
    assert journal.compactions > 0
    restored = WindowBuffers(4, 3, 4)
    assert Journal(tmp_path / "j").replay(restored) == 6  # 998 % 4 = 2 samples each
    assert [(d, v[:, 0].tolist()) for d, v, _, _ in restored.pending()] == [
        (f"d{d}", [996.0, 997.0]) for d in range(3)]
    data = (tmp_path / "j").read_bytes()
    (tmp_path / "j").write_bytes(data[:-5])  # the last record (d2's) torn by a crash
    torn = WindowBuffers(4, 3, 4)
    assert Journal(tmp_path / "j").replay(torn) == 4
    assert [d for d, _, _, _ in torn.pending()] == ["d0", "d1"]
