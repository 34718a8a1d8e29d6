"""``sigmoid-edge simulate`` against a real mosquitto, read back with real clients."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from edge.cli import main
from edge.tools import simulate, synthetic
from tests.mqtt_helpers import Collector, free_port

RATE = 200
DURATION = 1.0


def run_simulate(broker, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "edge", "--log-level", "warning", "simulate",
           "--broker", broker.url, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def expected_stream(device_index: int, n_devices: int, n: int, seed: int = 0):
    """The first ``n`` samples and per-sample labels the simulator sends for one device."""
    src = simulate.SyntheticSource(rate_hz=RATE, seed=seed)
    data, labels = [], []
    for seg in src.segments(device_index, n_devices):
        data.append(seg.data)
        labels += [seg.label] * len(seg.data)
        if len(labels) >= n:
            break
    return np.concatenate(data)[:n], labels[:n]


def decode(fmt: str, payload: bytes):
    """(samples [k, 3], ts [k] or None) of one sensor message."""
    doc = json.loads(payload)
    if fmt == "object":
        assert set(doc) == {"ts", "x", "y", "z"}
        return np.array([[doc["x"], doc["y"], doc["z"]]]), np.array([doc["ts"]])
    if fmt == "array":
        assert isinstance(doc, list) and len(doc) == 3
        return np.array([doc]), None
    assert set(doc) == {"samples", "ts"} and len(doc["samples"]) == len(doc["ts"])
    return np.array(doc["samples"]), np.array(doc["ts"])


@pytest.mark.parametrize("fmt", ["object", "array", "batch"])
def test_synthetic_streams_arrive_complete_in_order_and_labelled(broker, fmt):
    devices = 2
    with Collector(broker, "sensors/#", "sim/#", qos=1) as sub:
        proc = run_simulate(broker, "--synthetic", "--devices", str(devices), "--rate",
                            str(RATE), "--duration", str(DURATION), "--format", fmt)
        assert proc.returncode == 0, proc.stderr
        n = int(RATE * DURATION)
        # The broker forwards in order, so once every device's final (null) label is
        # here, all of its samples are too.
        msgs, ended = [], 0
        while ended < devices:
            msgs.append(sub.get(timeout=10))
            ended += msgs[-1].topic.startswith("sim/") and b'"label": null' in msgs[-1].payload
    for k in range(devices):
        dev = f"dev{k + 1}"
        data = [decode(fmt, m.payload) for m in msgs if m.topic == f"sensors/{dev}/data"]
        samples = np.concatenate([d for d, _ in data])
        want, want_labels = expected_stream(k, devices, n)
        assert samples.shape == (n, 3)
        np.testing.assert_allclose(samples, want, rtol=1e-6, atol=1e-6)
        if fmt == "batch":
            # About one message per 0.1 s, not one per sample.
            assert 0.8 * DURATION / 0.1 <= len(data) <= 1.5 * DURATION / 0.1
        labels = [json.loads(m.payload) for m in msgs if m.topic == f"sim/{dev}/label"]
        assert labels[-1]["label"] is None and labels[-1]["device"] == dev
        assert labels[0]["label"] == want_labels[0]
        if fmt != "array":
            ts = np.concatenate([t for _, t in data])
            np.testing.assert_allclose(np.diff(ts), 1 / RATE, atol=2e-6)
            assert labels[0]["ts"] == pytest.approx(ts[0], abs=1e-5)
            # Every label change is announced with the time of its first sample.
            change = np.flatnonzero(np.array(want_labels[1:]) != np.array(want_labels[:-1])) + 1
            starts = {round(d["ts"], 4): d["label"] for d in labels if d["label"]}
            for i in change:
                assert starts[round(float(ts[i]), 4)] == want_labels[i]
            # The last label message ends the stream right after the last sample.
            assert labels[-1]["ts"] == pytest.approx(ts[-1] + 1 / RATE, abs=1e-5)
    assert f"{devices * n} samples" in proc.stdout


def test_label_topic_is_outside_the_daemon_input(broker):
    # The daemon subscribes to sensors/+/#: label messages must never match it.
    # Both collectors are subscribed (SUBACK received) before the simulator starts.
    with Collector(broker, "sensors/+/#", qos=1) as sensors, \
            Collector(broker, "sim/+/label", qos=1) as label_sub:
        proc = run_simulate(broker, "--synthetic", "--rate", "50", "--duration", "0.5")
        assert proc.returncode == 0, proc.stderr
        topics = {m.topic for m in sensors.take(25, timeout=5)}
        labels = label_sub.take(2, timeout=10)
    assert topics == {"sensors/dev1/data"}
    assert [m.topic for m in labels] == ["sim/dev1/label"] * 2
    assert json.loads(labels[0].payload)["label"] in synthetic.LABELS


def test_device_stream_pauses_and_labels():
    segs = iter([simulate.Segment("a", np.zeros((3, 1), np.float32)),
                 simulate.Segment("b", np.ones((2, 1), np.float32), gap=4)])
    s = simulate.DeviceStream("d", segs)
    ev = s.advance(5)
    assert [(k, c) for k, c, _ in ev] == [("label", 0), ("data", 0)]
    assert ev[0][2] == "a" and len(ev[1][2]) == 3 and s.clock == 5
    ev = s.advance(10)  # 2 more periods of pause, then segment b at clock 7
    assert [(k, c) for k, c, _ in ev] == [("label", 7), ("data", 7)]
    assert ev[0][2] == "b" and ev[1][2].tolist() == [[1.0], [1.0]]
    assert s.done and s.clock == 9


def test_array_source_gives_each_device_its_own_cases():
    cases = [np.full((4, 2), k, np.float32) for k in range(5)]
    src = simulate.ArraySource(cases, list("abcde"), ["p", "q"], 10.0, gap=3)
    dev1 = list(src.segments(1, 2))
    assert [s.label for s in dev1] == ["b", "d"]
    assert [s.gap for s in dev1] == [0, 3]
    looped = src.segments(0, 2)
    src.loop = True
    assert [next(looped).label for _ in range(5)] == ["a", "c", "e", "a", "c"]


def test_missing_values_are_interpolated():
    x = np.array([[1.0], [np.nan], [3.0], [np.nan]], np.float32)
    np.testing.assert_array_equal(simulate._fill_missing(x)[:, 0], [1, 2, 3, 3])


@pytest.mark.parametrize("args, message", [
    ([], "give a DATA file"),
    (["--synthetic", "nofile.ts"], "either DATA or --synthetic"),
    (["missing.ts"], "no such file"),
    (["--synthetic", "--devices", "0"], "--devices must be >= 1"),
    (["--synthetic", "--broker", "http://x"], "mqtt:// or mqtts://"),
])
def test_bad_arguments_say_what_to_do(args, message, capsys):
    port = free_port()  # nothing listens: every error here comes before connecting
    assert main(["simulate", "--broker", f"mqtt://127.0.0.1:{port}", *args]) == 2
    assert message in capsys.readouterr().err


def test_unreachable_broker_is_a_clear_error(capsys):
    port = free_port()
    assert main(["simulate", "--synthetic", "--broker", f"mqtt://127.0.0.1:{port}"]) == 2
    assert f"cannot connect to the broker at mqtt://127.0.0.1:{port}" in capsys.readouterr().err


TS_FILE = """# a tiny multivariate .ts file
@problemName tiny
@univariate false
@dimensions 2
@equalLength true
@seriesLength 4
@classLabel true up down
@data
1,2,3,4:10,20,30,40:up
4,3,2,1:40,30,20,10:down
1,?,3,4:10,20,30,40:up
5,5,5,5:0,0,0,0:down
"""


def collect_until_end(sub, devices: int) -> list:
    msgs, ended = [], 0
    while ended < devices:
        msgs.append(sub.get(timeout=15))
        ended += msgs[-1].topic.startswith("sim/") and b'"label": null' in msgs[-1].payload
    return msgs


def test_ts_file_replays_one_case_after_another_per_device(broker, tmp_path):
    path = tmp_path / "tiny.ts"
    path.write_text(TS_FILE)
    with Collector(broker, "sensors/#", "sim/#", qos=1) as sub:
        proc = run_simulate(broker, str(path), "--rate", "50", "--devices", "2")
        assert proc.returncode == 0, proc.stderr
        msgs = collect_until_end(sub, 2)
    cases = {"dev1": [[[1, 10], [2, 20], [3, 30], [4, 40]], [[1, 10], [2, 20], [3, 30], [4, 40]]],
             "dev2": [[[4, 40], [3, 30], [2, 20], [1, 10]], [[5, 0], [5, 0], [5, 0], [5, 0]]]}
    for dev, want_labels in (("dev1", ["up", "up"]), ("dev2", ["down", "down"])):
        docs = [json.loads(m.payload) for m in msgs if m.topic == f"sensors/{dev}/data"]
        values = [[d["dim_0"], d["dim_1"]] for d in docs]
        # Case 3 has a missing value ('?'): filled by linear interpolation (2.0).
        assert values == cases[dev][0] + cases[dev][1]
        ts = np.array([d["ts"] for d in docs])
        steps = np.round(np.diff(ts) * 50).astype(int).tolist()
        # A pause of 10 sample periods between cases restarts the daemon's window.
        assert steps == [1, 1, 1, 11, 1, 1, 1]
        labels = [json.loads(m.payload) for m in msgs if m.topic == f"sim/{dev}/label"]
        starts = [d for d in labels if d["label"]]
        assert [d["label"] for d in starts] == want_labels
        assert [d["ts"] for d in starts] == pytest.approx([ts[0], ts[4]], abs=1e-5)


def test_ts_file_needs_a_rate(tmp_path, capsys):
    path = tmp_path / "tiny.ts"
    path.write_text(TS_FILE)
    assert main(["simulate", str(path), "--broker", "mqtt://127.0.0.1:1"]) == 2
    assert "pass --rate HZ" in capsys.readouterr().err


def test_csv_log_replays_its_own_devices_labels_and_rate(broker, tmp_path):
    from edge.tools.sensorfiles import CsvWriter

    path = tmp_path / "log.csv"
    with CsvWriter(path, ["a", "b"], device=True, label=True) as w:
        for dev, base in (("pump", 0.0), ("fan", 100.0)):
            t = 1000.0 + np.arange(6) / 20.0  # 20 Hz
            vals = base + np.arange(12, dtype=float).reshape(6, 2)
            w.write_many(t.tolist(), vals, [dev] * 6, ["idle"] * 3 + ["run"] * 3)
    with Collector(broker, "sensors/#", "sim/#", qos=1) as sub:
        t0 = time.monotonic()
        proc = run_simulate(broker, str(path), "--format", "batch", "--batch-seconds", "0.05")
        assert proc.returncode == 0, proc.stderr
        msgs = collect_until_end(sub, 2)
    assert time.monotonic() - t0 >= 0.3  # 6 samples at the log's own 20 Hz
    for dev, base in (("pump", 0.0), ("fan", 100.0)):
        docs = [json.loads(m.payload) for m in msgs if m.topic == f"sensors/{dev}/data"]
        samples = np.concatenate([d["samples"] for d in docs])
        np.testing.assert_array_equal(samples, base + np.arange(12).reshape(6, 2))
        labels = [json.loads(m.payload)["label"] for m in msgs if m.topic == f"sim/{dev}/label"]
        assert [x for x in dict.fromkeys(labels) if x] == ["idle", "run"]


def test_csv_without_devices_is_spread_over_n_devices():
    log = simulate.CsvSource.__new__(simulate.CsvSource)
    ts = np.arange(8) / 10.0
    log._rows = {"": (ts, np.arange(8, dtype=np.float32)[:, None], np.array(["a"] * 8))}
    log.rate_hz, log.loop, log.named = 10.0, False, False
    firsts = [next(log.segments(k, 4)).data[0, 0] for k in range(4)]
    assert firsts == [0, 2, 4, 6]
    whole = np.concatenate([s.data[:, 0] for s in log.segments(1, 4)])
    assert whole.tolist() == [2, 3, 4, 5, 6, 7, 0, 1]  # all of it, from its own offset


def iter_queue(sub):
    while not sub.messages.empty():
        yield sub.messages.get_nowait()


def write_ts(path, X, y) -> None:
    """Windows ``X [n, W, C]`` with labels ``y`` as a UEA/UCR .ts file."""
    labels = sorted(set(y.tolist()))
    lines = ["@problemName synthetic", "@univariate false", f"@dimensions {X.shape[2]}",
             "@equalLength true", f"@seriesLength {X.shape[1]}",
             f"@classLabel true {' '.join(labels)}", "@data"]
    for case, label in zip(X, y, strict=True):
        chans = [",".join(f"{v:.6g}" for v in case[:, c]) for c in range(X.shape[2])]
        lines.append(":".join(chans) + ":" + label)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_ts_replay_gives_the_daemon_one_window_per_case(broker, tmp_path):
    """A model trained on a .ts file classifies its replay case by case, as offline."""
    pytest.importorskip("onnx", reason="sigmoid-train needs onnx (not on a 32-bit ARM board)")
    from edge.tools.demo import LiveScore
    from tests.daemon_helpers import ROOT, DaemonProcess

    X, y = synthetic.make_windows(n_per_class=12, window=50, seed=4)
    write_ts(tmp_path / "train.ts", X, y)
    Xt, yt = synthetic.make_windows(n_per_class=3, window=50, seed=5)
    write_ts(tmp_path / "test.ts", Xt, yt)
    subprocess.run([sys.executable, "-m", "trainer", "fit", str(tmp_path / "train.ts"), "--out",
                    str(tmp_path / "m"), "--features", "stats,spectral", "--hidden", "none"],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    daemon = DaemonProcess(broker, tmp_path / "m" / "model.int8.onnx", tmp_path)
    try:
        with Collector(broker, "edge/+/classification", "sim/+/label",
                       "sigmoid-edge/testnode/status", qos=1) as sub:
            assert sub.get(timeout=15).payload == b"online"
            proc = run_simulate(broker, str(tmp_path / "test.ts"), "--rate", "250",
                                "--devices", "3")
            assert proc.returncode == 0, proc.stderr
            score = LiveScore()
            while score.windows < len(yt):
                m = sub.get(timeout=10)
                if m.topic.startswith("sim/"):
                    score.on_label(m.topic.split("/")[1], json.loads(m.payload), 0.0)
                elif m.topic.startswith("edge/"):
                    score.on_classification(json.loads(m.payload))
            time.sleep(1.0)  # a window too many would be here by now
            extra = [m for m in iter_queue(sub) if m.topic.startswith("edge/")]
    finally:
        daemon.signal(15)
        daemon.wait(10)
        daemon.close()
    # The pause between cases restarts the daemon's window: each case is exactly one window.
    assert score.windows == score.scored == len(yt) and not extra
    assert score.accuracy >= 0.9
