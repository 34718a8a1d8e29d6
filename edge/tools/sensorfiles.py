"""Sensor data files: UEA/UCR ``.ts`` archives and CSV sensor logs (numpy + stdlib only).

The edge side needs these formats too (``sigmoid-edge record`` writes CSV logs,
``sigmoid-edge simulate`` replays them), and the edge must never import the trainer, so
the readers and the writer live here.

CSV sensor-log format
---------------------
One header row, then one row per sample::

    ts,device,label,ax,ay,az
    1700000000.00,watch1,walking,0.12,-0.98,0.05
    1700000000.10,watch1,walking,0.15,-0.97,0.04

- ``ts`` (required): time of the sample in seconds (Unix time or any monotonic clock);
- ``device`` (optional): which sensor the row comes from; rows of different devices may
  interleave, each device's rows are taken in time order;
- ``label`` (optional): the class of the sample; an empty cell means "unlabelled";
- every other column is one channel, named by its header, in the model's channel order;
  a value is a decimal number, and an empty cell, ``?`` or ``nan`` is a missing value.

Column order is free; names are case-sensitive and must be unique. The daemon's
recordings (:class:`CsvWriter`) use exactly this format.

UEA/UCR ``.ts`` format
----------------------
Header lines start with ``@`` (``@problemName``, ``@univariate``, ``@dimensions``,
``@equalLength``, ``@seriesLength``, ``@classLabel true A B ...``, ``@missing``), comments
start with ``#`` or ``%``, ``@data`` starts the cases. A case is one line: channels separated by
``:``, values by ``,``, ``?`` for a missing value, the class label last. Channels of one
case may have different lengths only in unequal-length files; cases may always differ.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TS_COLUMN = "ts"
DEVICE_COLUMN = "device"
LABEL_COLUMN = "label"
RESERVED_COLUMNS = (TS_COLUMN, DEVICE_COLUMN, LABEL_COLUMN)
MISSING_TOKENS = frozenset({"", "?", "nan", "NaN", "NAN"})
# .ts comment lines: "#" in most archive files, "%" in some (aeon's UnitTest).
COMMENT_CHARS = ("#", "%")


class SensorFileError(ValueError):
    """A sensor data file is malformed; the message names the file, the line and the fix."""

    def __init__(self, path, line: int | None, message: str):
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


# --------------------------------------------------------------------------------------
# .ts (UEA/UCR)


@dataclass
class TsData:
    """The cases of one ``.ts`` file.

    Attributes
    ----------
    series : list of ndarray of float64, each shape (length_i, channels)
        One array per case; missing values are NaN. Lengths may differ between cases.
    labels : list of str or None
        Class label of each case (``None`` when the file has ``@classLabel false``).
    class_labels : list of str
        Labels declared in the header, in header order (empty when not declared).
    problem_name : str
        ``@problemName``, or the file stem.
    header : dict of str to str
        Every ``@`` header entry, lower-cased keys, raw values.
    """

    series: list[np.ndarray]
    labels: list[str] | None
    class_labels: list[str]
    problem_name: str
    header: dict[str, str] = field(default_factory=dict)

    @property
    def n_channels(self) -> int:
        return self.series[0].shape[1]

    @property
    def lengths(self) -> np.ndarray:
        return np.array([s.shape[0] for s in self.series])


def _parse_bool(path, line_no, key, value) -> bool:
    v = value.strip().lower()
    if v in ("true", "false"):
        return v == "true"
    raise SensorFileError(path, line_no, f"@{key} must be 'true' or 'false', got {value!r}")


def read_ts(path: str | os.PathLike) -> TsData:
    """Read a UEA/UCR ``.ts`` classification file.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    TsData

    Raises
    ------
    SensorFileError
        Naming the file, the line and what was expected, for any malformed header or case.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SensorFileError(path, None, f"not a UTF-8 text file ({exc.reason})") from None
    header: dict[str, str] = {}
    header_line: dict[str, int] = {}
    lines = text.splitlines()
    data_start = None
    for i, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith(COMMENT_CHARS):
            continue
        if not line.startswith("@"):
            raise SensorFileError(
                path, i, "expected a header line starting with '@' or '@data' before the cases"
            )
        key, _, value = line[1:].partition(" ")
        key = key.lower()
        if key == "data":
            data_start = i
            break
        header[key] = value.strip()
        header_line[key] = i
    if data_start is None:
        raise SensorFileError(path, None, "no '@data' line: this is not a .ts file")

    if "timestamps" in header and _parse_bool(
        path, header_line["timestamps"], "timestamps", header["timestamps"]
    ):
        raise SensorFileError(
            path, header_line["timestamps"],
            "@timeStamps true is not supported; export the file without time stamps",
        )
    if "targetlabel" in header and "classlabel" not in header:
        raise SensorFileError(
            path, header_line["targetlabel"],
            "this is a regression file (@targetLabel); only classification files are supported",
        )
    has_labels = False
    class_labels: list[str] = []
    if "classlabel" in header:
        first, *rest = header["classlabel"].split() or [""]
        has_labels = _parse_bool(path, header_line["classlabel"], "classLabel", first)
        class_labels = rest
        if has_labels and not class_labels:
            raise SensorFileError(
                path, header_line["classlabel"],
                "@classLabel true must be followed by the class labels, "
                "e.g. '@classLabel true A B'",
            )
    declared_dims = None
    if "dimensions" in header:
        try:
            declared_dims = int(header["dimensions"])
        except ValueError:
            raise SensorFileError(
                path, header_line["dimensions"],
                f"@dimensions must be an integer, got {header['dimensions']!r}",
            ) from None
    equal_length = None
    if "equallength" in header:
        equal_length = _parse_bool(
            path, header_line["equallength"], "equalLength", header["equallength"]
        )
    label_set = set(class_labels)

    series: list[np.ndarray] = []
    labels: list[str] = []
    n_dims = declared_dims
    for i in range(data_start + 1, len(lines) + 1):
        line = lines[i - 1].strip()
        if not line or line.startswith(COMMENT_CHARS):
            continue
        parts = line.split(":")
        if has_labels:
            if len(parts) < 2:
                raise SensorFileError(
                    path, i, "expected channels separated by ':' followed by ':<class label>'"
                )
            label = parts.pop().strip()
            if label_set and label not in label_set:
                raise SensorFileError(
                    path, i,
                    f"class label {label!r} is not one of those declared in @classLabel "
                    f"({' '.join(class_labels)})",
                )
            labels.append(label)
        if n_dims is None:
            n_dims = len(parts)
        if len(parts) != n_dims:
            raise SensorFileError(
                path, i,
                f"expected {n_dims} channel(s) separated by ':', found {len(parts)}"
                + (" (did the case lose its class label?)" if len(parts) == n_dims - 1 else ""),
            )
        channels = [_parse_values(path, i, d, p) for d, p in enumerate(parts)]
        lengths = {len(c) for c in channels}
        if len(lengths) > 1:
            if equal_length:
                raise SensorFileError(
                    path, i,
                    f"channels have different lengths {sorted(lengths)} but the header says "
                    "@equalLength true",
                )
            # Unequal channels within one case: stretch each to the longest (linear).
            longest = max(lengths)
            channels = [resample_linear(c[:, None], longest)[:, 0] for c in channels]
        series.append(np.stack(channels, axis=1))
    if not series:
        raise SensorFileError(path, None, "no cases after '@data'")
    if equal_length:
        lengths = {s.shape[0] for s in series}
        if len(lengths) > 1:
            raise SensorFileError(
                path, None,
                f"cases have different lengths {sorted(lengths)[:5]} but the header says "
                "@equalLength true",
            )
    if not class_labels and has_labels:
        class_labels = sorted(set(labels))
    return TsData(
        series=series,
        labels=labels if has_labels else None,
        class_labels=class_labels,
        problem_name=header.get("problemname", path.stem),
        header=header,
    )


def _parse_values(path, line_no: int, dim: int, text: str) -> np.ndarray:
    tokens = text.split(",")
    try:
        # "?" is the .ts token for a missing value.
        return np.array([math.nan if t.strip() == "?" else float(t) for t in tokens])
    except ValueError:
        for k, t in enumerate(tokens):
            try:
                float(t) if t.strip() != "?" else None
            except ValueError:
                raise SensorFileError(
                    path, line_no,
                    f"channel {dim + 1}, value {k + 1}: expected a number or '?', got {t!r}",
                ) from None
        raise


def resample_linear(x: np.ndarray, length: int) -> np.ndarray:
    """Stretch or shrink ``x`` ``[n, channels]`` to ``[length, channels]`` by linear interpolation.

    The first and last samples are kept; samples in between are read off the straight
    line between their two neighbours in the original series.
    """
    n = x.shape[0]
    if n == length:
        return x
    if n == 1:
        return np.repeat(x, length, axis=0)
    pos = np.linspace(0.0, n - 1, length)
    lo = np.minimum(np.floor(pos).astype(int), n - 2)
    frac = (pos - lo)[:, None]
    return x[lo] * (1.0 - frac) + x[lo + 1] * frac


# --------------------------------------------------------------------------------------
# CSV sensor logs


@dataclass
class CsvLog:
    """The rows of one CSV sensor log.

    Attributes
    ----------
    ts : ndarray of float64, shape (n,)
        Time of each row in seconds.
    values : ndarray of float32, shape (n, channels)
        Channel values; missing values are NaN.
    channels : tuple of str
        Channel names in column order.
    device : ndarray of str or None
        Device of each row, when the file has a ``device`` column.
    label : ndarray of str or None
        Label of each row ("" = unlabelled), when the file has a ``label`` column.
    """

    ts: np.ndarray
    values: np.ndarray
    channels: tuple[str, ...]
    device: np.ndarray | None = None
    label: np.ndarray | None = None


def read_csv(path: str | os.PathLike, channels: Sequence[str] | None = None) -> CsvLog:
    """Read a CSV sensor log (format in the module docstring).

    Parameters
    ----------
    path : str or path-like
        The file.
    channels : sequence of str, optional
        Channels to return, in this order (e.g. a model's channels); by default every
        column that is not ``ts``, ``device`` or ``label``, in file order.

    Raises
    ------
    SensorFileError
        Naming the file, the line and what was expected.
    """
    path = Path(path)
    try:
        return _read_csv(path, channels)
    except UnicodeDecodeError as exc:  # raised lazily, by whichever row holds the bad byte
        raise SensorFileError(path, None, f"not a UTF-8 text file ({exc.reason} at byte "
                              f"{exc.start} of a chunk); save it as UTF-8 CSV") from None


def _read_csv(path: Path, channels: Sequence[str] | None) -> CsvLog:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            head = next(reader)
        except StopIteration:
            raise SensorFileError(path, 1, "empty file; expected a header row like "
                                  "'ts,device,label,x,y,z'") from None
        except csv.Error as exc:
            raise SensorFileError(path, 1, f"bad CSV: {exc}") from None
        head = [h.strip() for h in head]
        dupes = sorted({h for h in head if head.count(h) > 1})
        if dupes:
            raise SensorFileError(path, 1, f"duplicate column names {dupes}")
        if TS_COLUMN not in head:
            raise SensorFileError(
                path, 1,
                f"expected a '{TS_COLUMN}' column (time in seconds) in the header, got {head}",
            )
        file_channels = [h for h in head if h not in RESERVED_COLUMNS]
        if any(not h for h in file_channels):
            raise SensorFileError(path, 1, "a channel column has an empty name")
        if channels is None:
            channels = file_channels
        missing = [c for c in channels if c not in head]
        if missing:
            raise SensorFileError(
                path, 1, f"channel column(s) {missing} not found; the file has {file_channels}"
            )
        if not channels:
            raise SensorFileError(path, 1, "no channel columns: expected e.g. 'ts,x,y,z'")
        try:
            rows = list(reader)
        except csv.Error as exc:
            raise SensorFileError(path, reader.line_num, f"bad CSV: {exc}") from None
    # Row i of `rows` is on line i + 2 (header is line 1); skip blank lines.
    line_nos = [i + 2 for i, r in enumerate(rows) if r]
    rows = [r for r in rows if r]
    if not rows:
        raise SensorFileError(path, None, "no data rows after the header")
    width = len(head)
    for ln, r in zip(line_nos, rows, strict=True):
        if len(r) != width:
            raise SensorFileError(
                path, ln, f"expected {width} comma-separated values like the header, got {len(r)}"
            )
    cols = list(zip(*rows, strict=True))
    index = {h: k for k, h in enumerate(head)}

    ts = _float_column(path, cols[index[TS_COLUMN]], line_nos, TS_COLUMN, allow_missing=False)
    values = np.empty((len(rows), len(channels)), np.float32)
    for k, c in enumerate(channels):
        values[:, k] = _float_column(path, cols[index[c]], line_nos, c, allow_missing=True)
    device = np.array([s.strip() for s in cols[index[DEVICE_COLUMN]]]) \
        if DEVICE_COLUMN in index else None
    label = np.array([s.strip() for s in cols[index[LABEL_COLUMN]]]) \
        if LABEL_COLUMN in index else None
    return CsvLog(ts=ts, values=values, channels=tuple(channels), device=device, label=label)


def _float_column(path, cells, line_nos, name, *, allow_missing: bool) -> np.ndarray:
    cleaned = [c.strip() for c in cells]
    if allow_missing:
        cleaned = ["nan" if c in MISSING_TOKENS else c for c in cleaned]
    try:
        out = np.array(cleaned, dtype=np.float64)
    except ValueError:
        out = None
    if out is not None and (allow_missing or np.isfinite(out).all()):
        return out
    for ln, c in zip(line_nos, cleaned, strict=True):
        try:
            v = float(c)
        except ValueError:
            v = None
        if v is None or (not allow_missing and not math.isfinite(v)):
            what = ("a number in seconds" if name == TS_COLUMN
                    else "a number, or empty/'?' if missing")
            raise SensorFileError(path, ln, f"column {name!r}: expected {what}, got {c!r}")
    raise AssertionError("unreachable: a bad cell was not found")  # pragma: no cover


class CsvWriter:
    """Append rows to a CSV sensor log (the format :func:`read_csv` reads).

    Opening an existing non-empty file checks that its header is the same, so a
    recording can be resumed; a new or empty file gets the header written first.

    Parameters
    ----------
    path : str or path-like
        The file, created if needed, appended to otherwise.
    channels : sequence of str
        Channel column names, in order.
    device : bool
        Write a ``device`` column.
    label : bool
        Write a ``label`` column.

    Examples
    --------
    >>> with CsvWriter("log.csv", ["x", "y"], device=True) as w:  # doctest: +SKIP
    ...     w.write(1700000000.0, [0.1, 0.2], device="dev1")
    """

    def __init__(self, path, channels: Sequence[str], *, device: bool = True,
                 label: bool = False):
        channels = [str(c) for c in channels]
        bad = [c for c in channels if c in RESERVED_COLUMNS or not c or "," in c or '"' in c]
        if bad or len(set(channels)) != len(channels):
            raise ValueError(f"channel names must be unique, non-empty, without ',' or '\"' "
                             f"and not one of {RESERVED_COLUMNS}; got {channels}")
        self.path = Path(path)
        self.channels = tuple(channels)
        self.has_device = device
        self.has_label = label
        self.header = [TS_COLUMN] + ([DEVICE_COLUMN] if device else []) \
            + ([LABEL_COLUMN] if label else []) + list(channels)
        existing = self.path.exists() and self.path.stat().st_size > 0
        if existing:
            with open(self.path, newline="", encoding="utf-8-sig") as f:
                first = next(csv.reader(f), [])
            if [h.strip() for h in first] != self.header:
                raise SensorFileError(
                    self.path, 1,
                    f"cannot append: the file's header {first} differs from {self.header}; "
                    "record into a new file",
                )
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file, lineterminator="\n")
        if not existing:
            self._csv.writerow(self.header)
        self.rows = 0

    def write(self, ts: float, values: Sequence[float], device: str | None = None,
              label: str | None = None) -> None:
        """Append one row; ``NaN`` or ``None`` values are written as empty cells."""
        self.write_many([ts], [values], None if device is None else [device],
                        None if label is None else [label])

    def write_many(self, ts: Iterable[float], values, device: Iterable[str] | None = None,
                   label: Iterable[str] | None = None) -> None:
        """Append several rows: ``values`` is ``[n, channels]``; ``device``/``label`` per row."""
        ts = list(ts)
        values = np.asarray(values, dtype=np.float64).reshape(len(ts), -1)
        if values.shape[1] != len(self.channels):
            raise ValueError(f"expected {len(self.channels)} values per row "
                             f"({', '.join(self.channels)}), got {values.shape[1]}")
        devices = [""] * len(ts) if device is None else [str(d) for d in device]
        labels = [""] * len(ts) if label is None else [str(x) for x in label]
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        for t, row, d, lab in zip(ts, values, devices, labels, strict=True):
            cells = [_fmt(t, 17)]
            if self.has_device:
                cells.append(d)
            if self.has_label:
                cells.append(lab)
            cells.extend(_fmt(v, 9) for v in row)
            out.writerow(cells)
        self._file.write(buf.getvalue())
        self.rows += len(ts)

    def flush(self) -> None:
        """Push written rows to the operating system (survives a crash of this process)."""
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> CsvWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fmt(v, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{float(v):.{digits}g}"
