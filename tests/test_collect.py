"""``sigmoid-train collect``: every capture stored once, across a stop and a broker restart.

Real processes: mosquitto (with persistence), ``sigmoid-edge run --capture uncertain`` and
``sigmoid-train collect``; inputs sent with the real ``mosquitto_pub``.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.capture import capture_id
from tests.daemon_helpers import ROOT, DaemonProcess, wait_for
from tests.models import mean_model
from tests.mqtt_helpers import Broker, mosquitto_pub
from trainer.captures import INDEX, CaptureError, CaptureStore, parse_capture


class CollectProcess:
    """``python -m trainer collect`` with its output in a file."""

    def __init__(self, broker: Broker, out: Path, workdir: Path):
        self.log_path = workdir / f"collect-{len(list(workdir.glob('collect-*')))}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trainer", "--log-level", "info", "collect",
             "--broker", broker.url, "--out", str(out), "--nodes", "testnode"],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(lambda: "subscribed to" in self.log(), 30, f"collect to subscribe: {self.log}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(20) == 0, self.log()
        self._log.close()
        return self.log()


def lines(out: Path) -> list[dict]:
    path = out / INDEX
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def hard(n: int, offset: float) -> str:
    """``n`` samples whose windows sit between 'low' and 'mid' (distinct values)."""
    rows = 0.5 + offset + np.arange(n)[:, None] * 1e-3 + np.zeros((n, 3))
    return json.dumps({"samples": rows.round(4).tolist()})


@pytest.mark.slow
def test_collect_stores_each_capture_once_across_a_stop_and_a_broker_restart(tmp_path):
    broker = Broker(tmp_path / "broker", persistence=True).start()
    model = mean_model(tmp_path / "model.onnx")  # window 8, hop 4
    out = tmp_path / "captures"
    daemon = DaemonProcess(broker, model, tmp_path, "--capture", "uncertain",
                           "--capture-rate", "1000")
    collect = None
    try:
        wait_for(lambda: "subscribed to" in daemon.log(), 30, "the daemon to subscribe")
        collect = CollectProcess(broker, out, tmp_path)
        mosquitto_pub(broker, "sensors/a/x", hard(24, 0.0), qos=1)  # windows 1-5
        wait_for(lambda: len(lines(out)) == 5, 30, f"5 captures: {daemon.log()}")
        collect.stop()
        # Collector stopped: the broker keeps its session and queues these two for it.
        mosquitto_pub(broker, "sensors/a/x", hard(8, 0.01), qos=1)  # windows 6-7
        broker.restart()
        # Inputs are sent only once the daemon is back (its session is not persistent, and a
        # persistent one may be sent an input twice, which would make more windows).
        wait_for(lambda: "reconnected" in daemon.log(), 30, "the daemon to reconnect")
        mosquitto_pub(broker, "sensors/a/x", hard(8, 0.02), qos=1)  # windows 8-9
        # A capture delivered again (as after a lost acknowledgement) must not be stored twice.
        first = out / "windows" / f"{lines(out)[0]['id']}.json"
        mosquitto_pub(broker, "sigmoid-edge/testnode/capture/a", first.read_text(), qos=1)
        collect = CollectProcess(broker, out, tmp_path)
        wait_for(lambda: len(lines(out)) == 9, 40, f"9 captures: {collect.log()}")
        wait_for(lambda: "duplicate" in collect.log(), 20, "the duplicate")
        summary = collect.stop()
        collect = None
    finally:
        if collect is not None:
            collect.proc.kill()
        daemon.signal(signal.SIGTERM)
        daemon.wait(10)
        daemon.close()
        broker.stop()
    index = lines(out)
    ids = [e["id"] for e in index]
    assert len(set(ids)) == 9 and len(list((out / "windows").glob("*.json"))) == 9
    starts = sorted(e["window_start"] for e in index)
    assert len(set(starts)) == 9 and all(e["reason"] == "uncertain" for e in index)
    # At least the one sent again; an acknowledgement lost in the stop may add another.
    found = re.search(r"stored 4 new captures \((\d+) duplicates, 0 rejected\); 9 in", summary)
    assert found and int(found.group(1)) >= 1, summary
    # Reopening the directory (as `label` and `fit --add` do) sees the same nine.
    assert sorted(CaptureStore(out).entries) == sorted(ids)


@pytest.mark.parametrize("payload, message", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"channels": [], "samples": [[1]]}', "'channels' must be"),
    (b'{"channels": ["x"], "samples": [[1, 2]]}', r"must be \[window, 1\]"),
    (b'{"channels": ["x"], "samples": [[1]], "window_start": 1, "model": {"sha256": "a"}}',
     "'device'"),
    (b'{"channels": ["x"], "samples": [[1]], "device": "d", "model": {"sha256": "a"}}',
     "'window_start'"),
    (b'{"channels": ["x"], "samples": [[1]], "device": "d", "window_start": 1}', "'model'"),
])
def test_bad_capture_messages_are_refused_with_the_reason(payload, message):
    with pytest.raises(CaptureError, match=message):
        parse_capture("n", payload)


def test_the_id_comes_from_the_window_not_from_the_message(tmp_path):
    doc = {"channels": ["x"], "samples": [[1.0]], "device": "d", "window_start": 5.0,
           "model": {"sha256": "ab"}, "capture_id": "../../etc/passwd"}
    parsed = parse_capture("n1", json.dumps(doc).encode())
    assert parsed["capture_id"] == capture_id("n1", "d", 5.0, "ab")
    store = CaptureStore(tmp_path)
    assert store.add(parsed) and not store.add(parse_capture("n1", json.dumps(doc).encode()))
    assert [p.name for p in (tmp_path / "windows").iterdir()] == [parsed["capture_id"] + ".json"]


def test_a_stop_between_file_and_index_line_is_repaired_on_open(tmp_path):
    docs = [parse_capture("n", json.dumps(
        {"channels": ["x"], "samples": [[float(i)]], "device": "d", "window_start": float(i),
         "model": {"sha256": "ab"}}).encode()) for i in range(3)]
    store = CaptureStore(tmp_path)
    for d in docs:
        store.add(d)
    index = tmp_path / INDEX
    text = index.read_text().splitlines(keepends=True)
    index.write_text(text[0] + text[1][:20])  # the third line lost, the second cut short
    again = CaptureStore(tmp_path)
    assert sorted(again.entries) == sorted(d["capture_id"] for d in docs)
    assert len(lines(tmp_path)) == 3 and index.read_text().endswith("\n")
