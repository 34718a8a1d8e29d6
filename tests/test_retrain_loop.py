"""The retrain loop, end to end, with real processes and a real mosquitto.

simulate -> (daemon classifies with signed model A) -> record -> ``sigmoid-train fit`` on
the recording -> ``sigmoid-train push`` (signed) -> the running daemon verifies and
hot-reloads B -> classifications carry B's sha256, and no window is missed across the swap.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge.tools import demo
from edge.tools.sensorfiles import read_csv
from tests.daemon_helpers import ROOT, DaemonProcess, wait_for
from tests.mqtt_helpers import Collector

RATE = 100.0
WINDOW, HOP = 100, 50
FIT_ARGS = ["--window", str(WINDOW), "--hop", str(HOP), "--features", "stats,spectral",
            "--hidden", "none", "--name", "loop"]


def run(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def check_no_window_missed(records: list[dict]) -> None:
    """Per device, consecutive windows start exactly one hop apart."""
    by_device: dict[str, list[float]] = {}
    for r in records:
        by_device.setdefault(r["device"], []).append(r["window_start"])
    assert len(by_device) == 2
    for device, starts in by_device.items():
        steps = np.round(np.diff(starts) * RATE).astype(int)
        assert steps.tolist() == [HOP] * len(steps), f"{device}: window steps {steps}"


@pytest.mark.slow
def test_simulate_record_fit_reload_without_missing_a_window(broker, tmp_path):
    pytest.importorskip("onnx", reason="sigmoid-train needs onnx (not on a 32-bit ARM board)")
    # Model A, trained on synthetic recordings: what the edge runs at first.
    demo.write_training_data(tmp_path / "a.csv", devices=2, seconds=20, seed=11)
    run("-m", "trainer", "fit", str(tmp_path / "a.csv"), "--out", str(tmp_path / "A"),
        "--version", "1", *FIT_ARGS)
    keys = tmp_path / "keys"
    run("-m", "trainer", "keygen", "--out", str(keys))
    model_a = tmp_path / "A" / "model.int8.onnx"
    run("-m", "trainer", "sign", str(model_a), "--key", str(keys / "signing.key"))
    # The daemon trusts our key, so it serves only signed models and accepts signed pushes.
    live = tmp_path / "live" / "model.onnx"
    live.parent.mkdir()
    shutil.copy(model_a, live)
    shutil.copy(model_a.with_name(model_a.name + ".sig"), live.with_name(live.name + ".sig"))
    sha_a = sha256(live)

    daemon = DaemonProcess(broker, live, tmp_path, "--qos", "1", "--mqtt-version", "3.1.1",
                           "--trusted-key", str(keys / "signing.pub"))
    recorder = start("record", "--broker", broker.url, "--topic", "sensors/{device}/#",
                     "--out", str(tmp_path / "rec.csv"), "--label-topic", "sim/{device}/label")
    try:
        with Collector(broker, "edge/+/classification", "sigmoid-edge/testnode/status",
                       qos=1) as sub, Collector(broker, "sigmoid-edge/testnode/errors") as events:
            assert sub.get(timeout=15).payload == b"online"
            for line in recorder.stderr:  # the recorder logs once it has subscribed
                if "subscribed" in line:
                    break
            # Long enough for any fit; stopped once B has served.
            sim = start("simulate", "--synthetic", "--broker", broker.url, "--devices", "2",
                        "--rate", str(RATE), "--duration", "90", "--seed", "3")
            # Record what the edge sees for a while, then stop the recorder with Ctrl-C.
            time.sleep(6)
            recorder.send_signal(signal.SIGINT)
            out, err = recorder.communicate(timeout=15)
            assert recorder.returncode == 0, err
            log = read_csv(tmp_path / "rec.csv")
            assert len(log.ts) >= 2 * 4 * RATE and set(log.device.tolist()) == {"dev1", "dev2"}

            # Retrain on the recording, then push the new model, signed, to the daemon.
            run("-m", "trainer", "fit", str(tmp_path / "rec.csv"), "--out",
                str(tmp_path / "B"), "--version", "2", *FIT_ARGS)
            model_b = tmp_path / "B" / "model.int8.onnx"
            sha_b = sha256(model_b)
            assert sha_b != sha_a
            run("-m", "trainer", "push", str(model_b), "--broker", broker.url, "--node",
                "testnode", "--key", str(keys / "signing.key"))

            # Keep streaming until both devices have had a few windows classified by B.
            records: list[dict] = []
            deadline = time.monotonic() + 60
            while sum(r["model"]["sha256"] == sha_b for r in records[-6:]) < 6:
                assert time.monotonic() < deadline, f"B never served: {daemon.log()}"
                records.append(json.loads(sub.get(timeout=10).payload))
            sim.send_signal(signal.SIGTERM)
            assert sim.wait(15) == 0
            while True:  # the last windows
                try:
                    records.append(json.loads(sub.get(timeout=1.0).payload))
                except Exception:
                    break
            accepted = json.loads(events.get(timeout=10).payload)
    finally:
        if recorder.poll() is None:
            recorder.kill()
        daemon.signal(signal.SIGTERM)
        daemon.wait(10)
        daemon.close()
    shas = [r["model"]["sha256"] for r in records]
    assert shas[0] == sha_a and shas[-1] == sha_b, daemon.log()
    for device in ("dev1", "dev2"):
        seq = [r["model"]["sha256"] for r in records if r["device"] == device]
        switch = seq.index(sha_b)
        # One clean switch: all A before it, all B after it.
        assert set(seq[:switch]) == {sha_a} and set(seq[switch:]) == {sha_b}
        assert [r["model"]["version"] for r in records if r["device"] == device][-1] == "2"
    assert accepted["event"] == "model_accepted" and accepted["origin"] == "push"
    assert accepted["model"]["sha256"] == sha_b
    check_no_window_missed(records)
    wait_for(lambda: "model swapped" in daemon.log(), 1, "the daemon's swap log line")
    # The daemon kept the pushed model (with its signature): a restart serves B.
    assert sha256(live) == sha_b
    assert live.with_name(live.name + ".sig").exists()
