"""``sigmoid-edge record`` against a real mosquitto, fed by real publishers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge import topics
from edge.cli import main
from edge.mqtt import connect_client
from edge.tools import record
from edge.tools.sensorfiles import read_csv
from edge.tools.simulate import SENSOR_TOPIC, SPARKPLUG_TOPIC, Simulator, SyntheticSource
from tests.daemon_helpers import wait_for
from tests.mqtt_helpers import mosquitto_pub
from tests.test_simulate import expected_stream


def start_record(broker, out: Path, *args: str) -> subprocess.Popen:
    """Start ``sigmoid-edge record`` and wait until it has subscribed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "record", "--broker", broker.url,
         "--out", str(out), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The recorder logs once the broker has acknowledged its subscription.
    deadline = time.monotonic() + 15
    for line in proc.stderr:
        if "subscribed" in line:
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"record did not subscribe: {proc.communicate()}")


def wait_rows(out: Path, n: int, timeout: float = 15.0) -> None:
    """Wait until ``out`` (and its rotated ``out.K.csv`` files) hold ``n`` complete rows.

    The recorder writes every 0.5 s; stopping it before every message it was sent is
    written would make the exact counts below race the broker.
    """
    def rows() -> int:
        files = out.parent.glob(f"{out.stem}*{out.suffix}")
        return sum(max(0, f.read_bytes().count(b"\n") - 1) for f in files)  # minus header

    wait_for(lambda: rows() >= n, timeout, what=f"{n} rows in {out}")


def stop(proc: subprocess.Popen, sig=signal.SIGINT) -> tuple[str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    return out, err


def simulate(broker, *, devices: int = 1, rate: float = 100, duration: float = 0.5,
             fmt: str = "object") -> None:
    """Publish synthetic streams in this process (a real paho client, like the CLI's)."""
    client = connect_client(broker.url, mqtt_version="3.1.1")
    topic = SPARKPLUG_TOPIC if fmt == "sparkplug" else SENSOR_TOPIC
    try:
        Simulator(client, SyntheticSource(rate_hz=rate), devices=devices,
                  fmt=fmt, topic=topic).run(duration=duration)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize("fmt", ["object", "array", "batch", "binary", "cbor", "sparkplug"])
def test_records_every_sample_with_its_true_label(broker, tmp_path, fmt):
    out = tmp_path / "run.csv"
    rate, duration, devices = 200, 1.0, 2
    # Blocks are read by their magic under the default --payload json; channels of
    # Sparkplug come from its births.
    payload = ["--payload", fmt] if fmt in ("cbor", "sparkplug") else []
    proc = start_record(broker, out, "--label-topic", "sim/{device}/label", *payload,
                        *(["--channels", "x,y,z"] if fmt not in ("object", "sparkplug")
                          else []))
    simulate(broker, devices=devices, rate=rate, duration=duration, fmt=fmt)
    n = int(rate * duration)
    wait_rows(out, devices * n)
    stdout, _ = stop(proc)
    log = read_csv(out)
    assert log.channels == ("x", "y", "z")
    assert f"record: {devices * n} rows from {devices} device(s)" in stdout
    for k in range(devices):
        rows = log.device == f"dev{k + 1}"
        want, want_labels = expected_stream(k, devices, n)
        np.testing.assert_allclose(log.values[rows], want, rtol=1e-6, atol=1e-6)
        if fmt != "array":
            # Samples carry their own times, so every row has exactly its true label.
            assert log.label[rows].tolist() == want_labels
            np.testing.assert_allclose(np.diff(log.ts[rows]), 1 / rate, atol=1e-5)
        else:
            # Arrival times: the label is right except within a few samples of a change.
            agree = np.mean(log.label[rows] == np.array(want_labels))
            assert agree > 0.9


@pytest.mark.slow
def test_sigint_mid_stream_leaves_a_complete_file(broker, tmp_path):
    out = tmp_path / "busy.csv"
    proc = start_record(broker, out, "--label", "normal")
    sim = subprocess.Popen([sys.executable, "-m", "edge", "--log-level", "warning", "simulate",
                            "--synthetic", "--broker", broker.url, "--devices", "8",
                            "--rate", "500", "--duration", "10"])
    try:
        # 8 devices x 500 Hz: about 4000 rows per second arrive; stop once 2000 are on disk.
        deadline = time.monotonic() + 20
        while not out.exists() or out.read_bytes().count(b"\n") < 2000:
            assert time.monotonic() < deadline, "the recording did not grow"
            time.sleep(0.05)
        stdout, _ = stop(proc, signal.SIGINT)
        assert sim.poll() is None  # still streaming when the recorder stopped
    finally:
        sim.terminate()
        sim.wait(30)
    raw = out.read_bytes()
    assert raw.endswith(b"\n")
    log = read_csv(out)  # parses: every line complete, every value a number
    assert len(log.ts) > 2000
    assert f"record: {len(log.ts)} rows" in stdout
    assert set(log.label.tolist()) == {"normal"}
    assert len(set(log.device.tolist())) == 8


def test_sigterm_and_resume_append(broker, tmp_path):
    out = tmp_path / "resume.csv"
    proc = start_record(broker, out, "--label", "a")
    simulate(broker)
    wait_rows(out, 50)
    stop(proc, signal.SIGTERM)
    first = len(read_csv(out).ts)
    assert first == 50
    # A crash mid-line: the next run cuts the partial row off and appends after it.
    with open(out, "ab") as f:
        f.write(b"1795623190.1,dev1,a,0.5")
    proc = start_record(broker, out, "--label", "b")
    simulate(broker)
    wait_rows(out, 100)
    stop(proc)
    log = read_csv(out)
    assert log.label.tolist() == ["a"] * 50 + ["b"] * 50


def test_rotates_large_recordings_into_complete_files(broker, tmp_path):
    out = tmp_path / "big.csv"
    proc = start_record(broker, out, "--max-mb", str(20 / 1024))  # 20 KiB files
    simulate(broker, devices=2, rate=400, duration=2)
    wait_rows(out, 1600)
    stdout, _ = stop(proc)
    files = sorted(tmp_path.glob("big*.csv"))
    assert len(files) >= 3
    assert out in files and (tmp_path / "big.1.csv") in files
    total = 0
    for f in files:
        log = read_csv(f)  # each has its own header
        total += len(log.ts)
        assert f.stat().st_size < 20 * 1024 + 256 * 70  # closed one chunk past the limit
    assert total == 1600
    assert "big.1.csv" in stdout


def test_other_payloads_and_rejections(broker, tmp_path):
    out = tmp_path / "mixed.csv"
    proc = start_record(broker, out, "--topic", "tele/{device}/SENSOR", "--rate", "10",
                        "--label-topic", "labels/+")
    mosquitto_pub(broker, "labels/pump", "idle", qos=1)  # plain-text label, arrival time
    time.sleep(0.2)
    messages = [
        '{"a": 1.0, "b": 2.0, "ts": 1000.0}',
        '[{"a": 3, "b": 4, "ts": 1000.1}, {"a": 5, "b": 6, "ts": 1000.2}]',
        '{"samples": [[7, 8], [9, 10]], "ts": 1000.3}',  # one ts: spread at --rate
        '{"a": "x", "b": 1}',  # not a number: rejected
        'not json',  # rejected
        '{"a": NaN, "b": 1}',  # rejected
    ]
    mosquitto_pub(broker, "tele/pump/SENSOR", "\n".join(messages), lines=True, qos=1)
    mosquitto_pub(broker, "tele/pu\u202emp/SENSOR", '{"a": 1, "b": 2}', qos=1)  # bidi override
    time.sleep(0.5)
    stdout, err = stop(proc)
    log = read_csv(out)
    assert log.channels == ("a", "b")
    np.testing.assert_allclose(log.ts, [1000.0, 1000.1, 1000.2, 1000.3, 1000.4])
    np.testing.assert_array_equal(log.values, [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]])
    # The label came with arrival time (now), after these old sample times: unlabelled.
    assert log.label.tolist() == [""] * 5
    assert "4 rejected" in stdout
    assert "not_a_number" in err and "invalid_json" in err and "bad_device" in err


def test_label_book_orders_and_looks_up():
    book = record.LabelBook()
    book.add("d", 10.0, "a")
    book.add("d", 10.0, "a")  # repeat
    book.add("d", 20.0, "b")
    book.add("d", 15.0, "c")  # late, out of order
    book.add("d", 30.0, None)  # stream ended
    got = book.lookup("d", np.array([5.0, 10.0, 14.9, 15.0, 25.0, 31.0]))
    assert got == ["", "a", "a", "c", "b", ""]
    assert book.lookup("other", np.array([1.0])) == [""]


@pytest.mark.parametrize("template, expected", [
    ("sensors/{device}/#", ("sensors/+/#", 1)),
    ("sensors/#", ("sensors/#", 1)),
    ("zigbee2mqtt/+", ("zigbee2mqtt/+", 1)),
])
def test_topic_matcher(template, expected):
    assert topics.to_filter(template) == expected


@pytest.mark.parametrize("args, message", [
    (["--topic", "sensors/dev1"], "cannot tell devices apart"),
    (["--max-mb", "0"], "at least 1 KiB"),
    (["--out", "x.txt"], "must be a .csv file"),
    (["--out", "no/such/dir/x.csv"], "does not exist"),
])
def test_bad_arguments(broker, args, message, capsys):
    assert main(["record", "--broker", broker.url, "--out", "x.csv", *args]) == 2
    assert message in capsys.readouterr().err


def test_label_and_label_topic_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        main(["record", "--broker", "mqtt://127.0.0.1:1", "--out", "x.csv", "--label", "a",
              "--label-topic", "x/+"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_label_json_is_what_simulate_sends():
    rec = record.Recorder.__new__(record.Recorder)
    rec.labels = record.LabelBook()
    rec.label_level = 1
    rec.stats = record.RecordStats()
    rec._handle_label("sim/dev1/label", json.dumps({"label": "x", "ts": 5.0}).encode(), 99.0)
    assert rec.labels.lookup("dev1", np.array([5.0, 4.0])) == ["x", ""]
