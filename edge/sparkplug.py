"""Sparkplug B input (``--payload sparkplug``): protobuf payloads on ``spBv1.0/...`` topics.

Topics are ``spBv1.0/{group}/{type}/{edge_node}[/{device}]``. The input topic names the data
messages (``spBv1.0/{group}/DDATA/{edge_node}/{device}``, or ``.../NDATA/{device}`` to
treat edge nodes as devices); the daemon subscribes to every message type of the same
groups and nodes, because births, deaths and sequence numbers decide how data is read:

- **Metrics -> channels** by metric name; a metric without a name is looked up by its alias
  in the table the device's last DBIRTH (or the node's NBIRTH) defined. Metrics that are no
  channel are ignored. An alias nobody defined is rejected (``unknown_alias``).
- **Samples**: every channel ``k`` times in a message gives ``k`` samples (the ``i``-th
  value of each channel is sample ``i``); a message with some channels once and others not
  at all (report by exception) fills them with their last value, from a birth or earlier
  data.
- **Time**: a metric's timestamp (ms) when the first channel's metrics have one, else the
  payload timestamp as the first sample's time, else arrival time.
- **Restarts**: a DBIRTH, DDEATH, NBIRTH or NDEATH, or a gap in the node's ``seq`` (0-255,
  one counter across all its messages), restarts the windows of the devices concerned, so
  no window spans a rebirth or lost messages.

The schema is the published Eclipse Tahu ``sparkplug_b.proto`` (fields used here only),
built in Python with ``descriptor_pb2``: no protoc, no generated code. Needs the
``sparkplug`` extra (``protobuf``).
"""

from __future__ import annotations

import numpy as np

from edge.payload import F32_MAX, Rejected

NAMESPACE = "spBv1.0"
DEFAULT_TOPIC = NAMESPACE + "/{group}/DDATA/{edge_node}/{device}"
DATA_TYPES = ("DDATA", "NDATA")
_BIRTH = {"DDATA": "DBIRTH", "NDATA": "NBIRTH"}
_DEATH = {"DDATA": "DDEATH", "NDATA": "NDEATH"}
# Sparkplug B DataType values whose int_value / long_value hold a two's complement.
_SIGNED32 = (1, 2, 3)  # Int8, Int16, Int32
_SIGNED64 = 4  # Int64
BOOLEAN = 11
_NUMERIC_KINDS = ("int_value", "long_value", "float_value", "double_value", "boolean_value")

_payload_class = None
_UNKNOWN = -2  # in an alias lookup array: no birth defined this alias
MAX_LOOKUP = 65536  # aliases above this go to the general reader's dict lookups
# Metric bytes up to which a device keeps a _Template (it holds two integers of that size):
# bounds its memory at max_devices x 32 kB; larger messages take the general numpy reader,
# whose per-message cost is small beside theirs anyway.
MAX_TEMPLATE_BYTES = 16384


def payload_class():
    """The ``Payload`` protobuf message class (built once, from the Tahu field numbers)."""
    global _payload_class
    if _payload_class is None:
        _payload_class = _build_payload_class()
    return _payload_class


def _build_payload_class():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="sigmoid_edge_sparkplug_b.proto", package="sigmoid_edge.sparkplug_b",
        syntax="proto2")
    payload = fdp.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    metric.oneof_decl.add(name="value")
    for name, number, kind in (
            ("name", 1, F.TYPE_STRING), ("alias", 2, F.TYPE_UINT64),
            ("timestamp", 3, F.TYPE_UINT64), ("datatype", 4, F.TYPE_UINT32),
            ("is_historical", 5, F.TYPE_BOOL), ("is_transient", 6, F.TYPE_BOOL),
            ("is_null", 7, F.TYPE_BOOL)):
        metric.field.add(name=name, number=number, type=kind, label=F.LABEL_OPTIONAL)
    for name, number, kind in (
            ("int_value", 10, F.TYPE_UINT32), ("long_value", 11, F.TYPE_UINT64),
            ("float_value", 12, F.TYPE_FLOAT), ("double_value", 13, F.TYPE_DOUBLE),
            ("boolean_value", 14, F.TYPE_BOOL), ("string_value", 15, F.TYPE_STRING),
            ("bytes_value", 16, F.TYPE_BYTES)):
        # Fields 17-19 (DataSet, Template, extension) are left out: parsed as unknown fields.
        metric.field.add(name=name, number=number, type=kind, label=F.LABEL_OPTIONAL,
                         oneof_index=0)
    for name, number, kind, label in (
            ("timestamp", 1, F.TYPE_UINT64, F.LABEL_OPTIONAL),
            ("metrics", 2, F.TYPE_MESSAGE, F.LABEL_REPEATED),
            ("seq", 3, F.TYPE_UINT64, F.LABEL_OPTIONAL),
            ("uuid", 4, F.TYPE_STRING, F.LABEL_OPTIONAL),
            ("body", 5, F.TYPE_BYTES, F.LABEL_OPTIONAL)):
        field = payload.field.add(name=name, number=number, type=kind, label=label)
        if kind == F.TYPE_MESSAGE:
            field.type_name = ".sigmoid_edge.sparkplug_b.Payload.Metric"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("sigmoid_edge.sparkplug_b.Payload"))


def encode(metrics, *, timestamp: int | None = None, seq: int | None = None) -> bytes:
    """A Sparkplug B payload (for tools and tests).

    Parameters
    ----------
    metrics : iterable of dict
        Keys of ``Payload.Metric``: ``name``, ``alias``, ``timestamp`` (ms), ``datatype``
        and one value (``float_value``, ``double_value``, ``int_value``, ...).
    timestamp : int, optional
        Payload timestamp, ms since the epoch.
    seq : int, optional
        Sequence number 0-255.
    """
    p = payload_class()()
    if timestamp is not None:
        p.timestamp = timestamp
    if seq is not None:
        p.seq = seq
    for m in metrics:
        p.metrics.add(**m)
    return p.SerializeToString()


def encode_samples(values, channels, *, start_ms: int | None = None,
                   period_ms: float | None = None, seq: int | None = None,
                   aliases: dict | None = None) -> bytes:
    """Samples ``[n, C]`` as one DDATA payload: ``n`` float metrics per channel, sample-major.

    With ``aliases`` (channel -> alias) metrics carry the alias instead of the name (send a
    birth with :func:`birth` first); with ``start_ms`` and ``period_ms`` each carries its time.
    """
    rows = np.asarray(values, dtype=np.float64).tolist()
    metrics = []
    for i, row in enumerate(rows):
        for name, v in zip(channels, row, strict=True):
            m = {"alias": aliases[name]} if aliases else {"name": name}
            if start_ms is not None and period_ms is not None:
                m["timestamp"] = int(round(start_ms + i * period_ms))
            m["float_value"] = v
            metrics.append(m)
    return encode(metrics, timestamp=start_ms, seq=seq)


def birth(channels, aliases: dict | None = None, *, seq: int = 0,
          timestamp: int | None = None) -> bytes:
    """An NBIRTH/DBIRTH payload declaring ``channels`` as Float metrics (with aliases)."""
    metrics = []
    for name in channels:
        m = {"name": name, "datatype": 9, "float_value": 0.0}
        if aliases:
            m["alias"] = aliases[name]
        metrics.append(m)
    return encode(metrics, timestamp=timestamp, seq=seq)


class _Node:
    __slots__ = ("seq", "devices", "aliases")

    def __init__(self):
        self.seq = None  # last sequence number seen
        self.devices: set[str] = set()  # window keys of this node's devices
        self.aliases: dict[int, tuple[str, int]] = {}  # NBIRTH: alias -> (name, datatype)


class _Device:
    __slots__ = ("aliases", "types", "last", "lookup", "template")

    def __init__(self, width: int):
        self.lookup = None  # alias -> channel array for the fast reader, built on first use
        self.template = None  # _Template of the last uniform DDATA (needs ``lookup``)
        self.aliases: dict[int, tuple[str, int]] = {}  # alias -> (name, datatype)
        self.types: dict[str, int] = {}  # name -> datatype
        self.last = [None] * width  # last value per channel (report by exception)


class SparkplugDecoder:
    """Sparkplug B messages -> per-device samples and window restarts.

    Parameters
    ----------
    channels : sequence of str
        The model's channels: metric names.
    template : str
        The input topic template, ``spBv1.0/{group}/DDATA/{edge_node}/{device}`` (or
        ``.../NDATA/{device}``); levels other than the placeholders must match literally.
    max_bytes : int
        Larger payloads are rejected unread.
    max_devices : int
        Devices (and edge nodes) whose birth state is kept; beyond it the table starts over.
    check_seq : bool
        Restart windows on a sequence gap; off when this reader sees only some of a node's
        messages (``--shard``, shared subscriptions).

    Notes
    -----
    :meth:`handle` returns a list of ``(device, values, ts)``: samples as from
    :meth:`edge.payload.PayloadParser.parse`, or ``values`` None for "restart this
    device's window".
    """

    def __init__(self, channels, template: str = DEFAULT_TOPIC, *,
                 max_bytes: int = 256 * 1024, max_devices: int = 1000,
                 check_seq: bool = True):
        self.channels = tuple(channels)
        self.width = len(self.channels)
        self.index = {name: i for i, name in enumerate(self.channels)}
        self._cycle = np.arange(self.width)
        self.filter, self.data_type, self.device_level = parse_template(template)
        self.max_bytes = max_bytes
        self.max_devices = max_devices
        self.check_seq = check_seq
        self._Payload = payload_class()
        self._nodes: dict[tuple, _Node] = {}
        self._devices: dict[tuple, _Device] = {}

    def adopt(self, old: SparkplugDecoder) -> None:
        """Take over the births and sequence numbers ``old`` saw (a model swap)."""
        self._nodes = old._nodes
        self._devices = old._devices
        for state in self._devices.values():
            state.lookup = state.template = None  # alias -> channel index of the old model
            if old.channels != self.channels:  # last values were of the old channels
                state.last = [None] * self.width

    def handle(self, topic: str, payload: bytes) -> list:
        """One message -> samples and restarts (see the class notes); raises Rejected."""
        levels = topic.split("/")
        if len(levels) < 4 or levels[0] != NAMESPACE:
            raise Rejected("invalid_sparkplug", f"topic {topic!r:.80} is not spBv1.0/GROUP/"
                                                "TYPE/EDGE_NODE[/DEVICE]")
        kind = levels[2]
        node_key = (levels[1], levels[3])
        if kind not in ("NBIRTH", "NDEATH", "NDATA", "DBIRTH", "DDEATH", "DDATA"):
            return []  # NCMD, DCMD, STATE...: not sensor data
        if len(payload) > self.max_bytes:
            raise Rejected("too_large", f"{len(payload)} bytes > max_payload_bytes "
                                        f"{self.max_bytes}")
        node_level = kind[0] == "N"
        if node_level != (len(levels) == 4) or len(levels) > 5:
            raise Rejected("invalid_sparkplug", f"{kind} topic {topic!r:.80} has "
                                                f"{len(levels)} levels")
        p = quick = fast = state = None
        if kind[1:] == "DATA":
            key = node_key + (levels[4],) if len(levels) == 5 else node_key
            state = self._devices.get(key)
            if state is not None and state.template is not None:
                quick = state.template.read(payload)
            if quick is None:
                fast = uniform_metrics(payload)
        if quick is not None:
            seq = quick[3]
        elif fast is not None:
            seq = fast.seq
        else:
            p = self._parse(payload)
            seq = p.seq if p.HasField("seq") else None
        node = self._nodes.get(node_key)
        if node is None:
            if len(self._nodes) >= self.max_devices:
                self._nodes.clear()
            node = self._nodes[node_key] = _Node()
        out: list = []
        ours = kind[0] == self.data_type[0]  # this type's births/data hold our devices
        device = levels[self.device_level] if ours and self.device_level < len(levels) \
            else None
        if kind == "NDEATH":  # bdSeq only; the node and its devices are gone
            out += [(d, None, None) for d in node.devices]
            node.seq = None
            return out
        if self.check_seq and seq is not None:
            if kind == "NBIRTH":
                node.seq = seq
            else:
                if node.seq is not None and seq != (node.seq + 1) % 256:
                    out += [(d, None, None) for d in node.devices if d != device]
                    if device is not None:
                        out.append((device, None, None))
                node.seq = seq
        if kind == "NBIRTH":
            node.aliases = _alias_table(p.metrics)
            for key, state in self._devices.items():  # their lookups include node aliases
                if key[:2] == node_key:
                    state.lookup = state.template = None
            out += [(d, None, None) for d in node.devices]
            if device is not None:  # NDATA mode: the node is the device
                self._birth(node, node_key, device, p, out)
            return out
        if device is None:
            return out  # a device message while edge nodes are the devices, or the reverse
        if kind[1:] == "BIRTH":
            self._birth(node, node_key + (levels[4],), device, p, out)
            return out
        if kind[1:] == "DEATH":
            self._devices.pop(node_key + (levels[4],), None)
            out.append((device, None, None))
            return out
        if state is None:  # data before a birth: names work, aliases cannot
            state = self._new_device(key)
        if quick is not None:
            rows, times, ts, _ = quick
            got = self._fast_rows(rows, times, ts, state)
        else:
            got = self._fast_samples(payload, fast, state, node) if fast is not None else None
        values, ts = got or self._samples(p or self._parse(payload), state, node)
        node.devices.add(device)
        out.append((device, values, ts))
        return out

    def _parse(self, payload: bytes):
        try:
            return self._Payload.FromString(payload)
        except Exception as e:  # google.protobuf.message.DecodeError and friends
            raise Rejected("invalid_sparkplug", f"not a Sparkplug B payload: {e}"[:120]) from None

    def _fast_samples(self, payload: bytes, u: _Uniform, state: _Device, node: _Node):
        """:meth:`_samples` of a :func:`uniform_metrics` result; None: let protobuf read it.

        Also keeps the layout as the device's :class:`_Template` for its next messages.
        """
        aliases, values = u.aliases, u.values
        if u.names is not None:  # names win over aliases, as in _samples
            index = self.index
            chans = np.array([index.get(name, -1) for name in u.names], dtype=np.intp)
        else:
            lookup = state.lookup
            if lookup is None:
                lookup = state.lookup = self._alias_lookup(state, node)
            if int(aliases.max()) >= len(lookup):
                return None  # beyond the array (or undefined): the general reader decides
            chans = lookup[aliases]
        width = self.width
        if len(chans) % width == 0 and (chans.reshape(-1, width) == self._cycle).all():
            # The usual layout: sample-major, channels in the model's order.
            state.template = _Template.make(payload, u, None, width)
            first = None if u.times is None else u.times[::width]
            return self._fast_rows(values.reshape(-1, width), first, u.ts, state)
        if chans.min() == _UNKNOWN:
            bad = int(aliases[chans == _UNKNOWN][0])
            raise Rejected("unknown_alias", f"metric alias {bad} was not defined by a "
                                            "birth of this device (rebirth it)")
        kept = np.flatnonzero(chans >= 0)
        if not len(kept):
            return None  # protobuf's reader says what is missing
        chans = chans[kept]
        counts = np.bincount(chans, minlength=width)
        k = int(counts[0])
        if not (k and counts.min() == counts.max()):
            return None  # report by exception or uneven: the general reader
        select = kept[np.argsort(chans, kind="stable")]  # metric indices, channel-major
        state.template = _Template.make(payload, u, select, width)
        first = None if u.times is None else u.times[select[:k]]
        return self._fast_rows(values[select].reshape(width, k).T, first, u.ts, state)

    def _fast_rows(self, rows, first, ts, state: _Device):
        """Check, remember and time the ``[k, C]`` samples of the fast readers.

        ``first``: the metric timestamps (ms) of the first channel, or None.
        """
        if rows.dtype.itemsize == 4:
            out = rows.astype(np.float32)
        else:
            with np.errstate(over="ignore"):  # beyond float32 becomes inf: checked below
                out = rows.astype(np.float32)
        # float32 of a finite value beyond float32's range is inf, so one check finds NaN,
        # inf and out of range alike (NaN fails every comparison).
        if not (-F32_MAX <= out.min() and out.max() <= F32_MAX):
            if np.isnan(rows).any():
                raise Rejected("not_finite", "NaN metric value")
            raise Rejected("out_of_range", "a metric value does not fit in float32")
        state.last = rows[-1].tolist()
        if first is not None and first.all():
            return out, first / 1000.0
        if ts:
            return out, ts / 1000.0
        return out, None

    def _alias_lookup(self, state: _Device, node: _Node) -> np.ndarray:
        """alias -> channel index (-1: not a channel, _UNKNOWN: no birth defined it)."""
        table = {**node.aliases, **state.aliases}
        size = min(max(table, default=-1) + 1, MAX_LOOKUP)
        # intp, as the channels by name: they go to np.bincount, which a 32-bit numpy (armhf,
        # armel) refuses int64 for ("Cannot cast ... according to the rule 'safe'").
        lookup = np.full(size, _UNKNOWN, dtype=np.intp)
        for alias, (name, _) in table.items():
            if alias < size:
                lookup[alias] = self.index.get(name, -1)
        return lookup

    def _new_device(self, key: tuple) -> _Device:
        if len(self._devices) >= self.max_devices:
            self._devices.clear()
        state = self._devices[key] = _Device(self.width)
        return state

    def _birth(self, node: _Node, key: tuple, device: str, p, out: list) -> None:
        state = self._new_device(key)
        state.aliases = _alias_table(p.metrics)
        for name, datatype in state.aliases.values():
            state.types[name] = datatype
        for m in p.metrics:
            c = self.index.get(m.name)
            if c is not None:
                state.types[m.name] = m.datatype
                value = _value(m, m.datatype)
                if value is not None:
                    state.last[c] = value
        node.devices.add(device)
        out.append((device, None, None))

    def _samples(self, p, state: _Device, node: _Node):
        index, aliases = self.index, state.aliases
        chans, vals, times = [], [], []
        for m in p.metrics:
            name = m.name
            if not name:
                entry = aliases.get(m.alias) or node.aliases.get(m.alias)
                if entry is None:
                    raise Rejected("unknown_alias", f"metric alias {m.alias} was not defined "
                                                    "by a birth of this device (rebirth it)")
                name = entry[0]
            c = index.get(name)
            if c is None:
                continue
            kind = m.WhichOneof("value")
            if kind == "float_value":
                v = m.float_value
            else:
                v = _value(m, m.datatype or state.types.get(name, 0), kind)
                if v is None:
                    raise Rejected("not_a_number", f"metric {name!r} has no numeric value "
                                                   f"({kind or 'null'})")
            chans.append(c)
            vals.append(v)
            times.append(m.timestamp)
        if not chans:
            raise Rejected("missing_channel", f"no metric of the model's channels "
                                              f"{list(self.channels)}")
        width = self.width
        counts = np.bincount(chans, minlength=width)
        k = int(counts[0])
        arr = np.asarray(vals, dtype=np.float64)
        if k and counts.min() == counts.max():
            order = np.argsort(chans, kind="stable")
            values = arr[order].reshape(width, k).T
            first = np.asarray(times, dtype=np.float64)[order[:k]]
        elif counts.max() == 1:  # report by exception: the others keep their last value
            row = list(state.last)
            for c, v in zip(chans, vals, strict=True):
                row[c] = v
            if None in row:
                missing = [self.channels[c] for c, v in enumerate(row) if v is None]
                raise Rejected("missing_channel", f"no value yet for channel(s) {missing} "
                                                  "(not in this message nor a birth)")
            values = np.asarray([row], dtype=np.float64)
            first = np.asarray(times[:1], dtype=np.float64) if counts[0] else np.zeros(1)
        else:
            raise Rejected("wrong_width", "channels have different numbers of values: "
                           + ", ".join(f"{c} {n}" for c, n in zip(self.channels,
                                                                  counts.tolist(), strict=True)))
        if not np.abs(values).max() <= F32_MAX:
            if np.isnan(values).any():
                raise Rejected("not_finite", "NaN metric value")
            raise Rejected("out_of_range", "a metric value does not fit in float32")
        state.last = values[-1].tolist()
        values = values.astype(np.float32)
        if first.all():
            return values, first / 1000.0
        if p.timestamp:
            return values, p.timestamp / 1000.0
        return values, None


# The fast path: a DDATA whose metrics all share one byte layout (alias, optional timestamp
# and datatype, a float or double; what Tahu-style encoders send for samples) is read with
# numpy over a [metrics, bytes] view instead of one protobuf object per metric (6x the
# cost). Anything else goes to protobuf; both give the same samples (tests/test_fuzz_formats).
_FAST_VARINTS = {0x10: "alias", 0x18: "timestamp", 0x20: "datatype"}
_FAST_VALUES = {0x65: ("<f4", 4), 0x69: ("<f8", 8)}  # float_value (12), double_value (13)


def _varint(b: bytes, pos: int):
    """(value, next position) of a varint of at most 9 bytes, or None."""
    value = shift = 0
    for i in range(pos, min(pos + 9, len(b))):
        byte = b[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    return None


def _top_fields(b: bytes, pos: int, end: int, found: dict):
    """Read top-level timestamp (1) and seq (3) varints in b[pos:end]; False on anything else."""
    while pos < end:
        tag = b[pos]
        if tag not in (0x08, 0x18) or tag in found:
            return False
        got = _varint(b, pos + 1)
        if got is None or got[1] > end:
            return False
        found[tag], pos = got
    return True


def _metric_layout(m: bytes):
    """Where a metric's fields are: ``(fields, value, name)`` or None (not a fast layout).

    ``fields``: {"alias" / "timestamp" / "datatype": [byte positions of the varint]};
    ``value``: (dtype, position); ``name``: (position, length) of the name's bytes, or None.
    """
    fields, value, name, pos = {}, None, None, 0
    while pos < len(m):
        tag = m[pos]
        if tag in _FAST_VARINTS and _FAST_VARINTS[tag] not in fields:
            got = _varint(m, pos + 1)
            if got is None:
                return None
            fields[_FAST_VARINTS[tag]] = list(range(pos + 1, got[1]))
            pos = got[1]
        elif tag in _FAST_VALUES and value is None:
            dtype, size = _FAST_VALUES[tag]
            if pos + 1 + size > len(m):
                return None
            value, pos = (dtype, pos + 1), pos + 1 + size
        elif tag == 0x0A and name is None and pos + 1 < len(m) and 0 < m[pos + 1] < 0x80:
            name, pos = (pos + 2, m[pos + 1]), pos + 2 + m[pos + 1]  # an empty name: protobuf
            if pos > len(m):
                return None
        else:
            return None
    if value is None or ("alias" not in fields and name is None):
        return None
    return fields, value, name


def _leading_fields(b: bytes, top: dict) -> int | None:
    """Read the timestamp / seq varints before the metrics into ``top``; where metrics start."""
    pos = 0
    while pos < len(b) and b[pos] != 0x12:
        tag = b[pos]
        if tag not in (0x08, 0x18) or tag in top:
            return None
        got = _varint(b, pos + 1)
        if got is None:
            return None
        top[tag], pos = got
    return pos


def _column(rows: np.ndarray, positions: list[int]) -> np.ndarray:
    """The varint at byte ``positions`` of every row, as uint64."""
    out = np.zeros(len(rows), dtype=np.uint64)
    for i, q in enumerate(positions):
        out |= (rows[:, q] & 0x7F).astype(np.uint64) << np.uint64(7 * i)
    return out


class _Uniform:
    """What :func:`uniform_metrics` found: the metrics, and their byte layout.

    Attributes
    ----------
    aliases : ndarray of uint64, or None
        Each metric's alias (None when they carry none).
    names : list of str, or None
        Each metric's name (None when they carry none; a name wins over an alias).
    values : ndarray of float32 or float64
    times : ndarray of uint64, or None
        The metric timestamps (ms), None when they carry none.
    ts, seq : int or None
        The payload's timestamp and sequence number.
    """

    __slots__ = ("pos", "n", "row", "fields", "name", "dtype", "at", "aliases", "names",
                 "values", "times", "ts", "seq")


def uniform_metrics(payload: bytes) -> _Uniform | None:
    """A DATA payload whose metrics share one byte layout, read with numpy; else None.

    The layout: every metric has the same fields in the same order with varints of the same
    lengths, an alias or a name (names of one length), and a Float or Double value; the
    payload's timestamp and seq may come before or after the metrics. Anything else is
    None: protobuf reads it.
    """
    b, top = payload, {}
    pos = _leading_fields(b, top)
    if pos is None or pos + 2 > len(b) or not 0 < b[pos + 1] < 0x80:
        return None
    size = b[pos + 1]
    row = size + 2
    layout = _metric_layout(b[pos + 2:pos + row])
    if layout is None:
        return None
    fields, (dtype, at), name = layout
    arr = np.frombuffer(b, np.uint8, offset=pos)
    rows = arr[:len(arr) // row * row].reshape(-1, row)
    same = (rows[:, 0] == 0x12) & (rows[:, 1] == size)
    n = len(rows) if same.all() else int(np.argmin(same))
    rows = rows[:n, 2:]
    if not _top_fields(b, pos + n * row, len(b), top):
        return None
    # Every row must have the first one's tag bytes and varint continuation bits.
    mask = np.zeros(size, dtype=np.uint8)
    mask[[p[0] - 1 for p in fields.values()] + [at - 1]] = 0xFF
    mask[[q for p in fields.values() for q in p]] = 0x80
    if name is not None:
        mask[[name[0] - 2, name[0] - 1]] = 0xFF  # the name's tag and length
    if ((rows ^ rows[0]) & mask).any():
        return None  # another layout somewhere: protobuf reads it
    u = _Uniform()
    u.names = None
    if name is not None:
        start, length = name
        blob = np.ascontiguousarray(rows[:, start:start + length]).tobytes()
        try:
            u.names = [blob[i:i + length].decode("utf-8")
                       for i in range(0, len(blob), length)]
        except UnicodeDecodeError:
            return None
    u.pos, u.n, u.row, u.fields, u.name, u.dtype, u.at = pos, n, row, fields, name, dtype, at
    width = np.dtype(dtype).itemsize
    u.values = np.ascontiguousarray(rows[:, at:at + width]).view(dtype).ravel()
    u.times = _column(rows, fields["timestamp"]) if "timestamp" in fields else None
    u.aliases = _column(rows, fields["alias"]) if "alias" in fields else None
    u.ts, u.seq = top.get(0x08), top.get(0x18)
    return u


class _Template:
    """The metric bytes of a device's last uniform DDATA, to read the next ones in one go.

    Devices send the same metrics in the same order message after message; only the values,
    timestamps and the payload's seq/timestamp change. A message whose metric bytes equal the
    template's everywhere except in those (tags, lengths, aliases and varint continuation
    bits compared as one masked big-integer equality) has the template's layout, so its
    samples are one strided ``np.frombuffer`` in the order the template worked out.
    """

    __slots__ = ("n", "span", "mask", "expected", "records", "select", "width", "k",
                 "time_bytes", "time_shifts")

    @classmethod
    def make(cls, payload: bytes, u: _Uniform, select: np.ndarray | None, width: int):
        """The template of ``u``'s layout, or None beyond :data:`MAX_TEMPLATE_BYTES`."""
        return cls(payload, u, select, width) if u.n * u.row <= MAX_TEMPLATE_BYTES else None

    def __init__(self, payload: bytes, u: _Uniform, select: np.ndarray | None, width: int):
        self.n, self.span = u.n, u.n * u.row
        mask = np.zeros(u.row, dtype=np.uint8)
        mask[:2] = 0xFF  # the metric's tag and length
        mask[[p[0] + 1 for p in u.fields.values()] + [u.at + 1]] = 0xFF  # field tags
        mask[[q + 2 for q in u.fields.get("alias", ())]] = 0xFF  # the aliases themselves
        if u.name is not None:  # the name: tag, length and bytes
            start, length = u.name
            mask[start:start + length + 2] = 0xFF
        mask[[q + 2 for name, p in u.fields.items() if name != "alias" for q in p]] |= 0x80
        region = np.frombuffer(payload, np.uint8, self.span, u.pos)
        full = np.tile(mask, u.n)
        self.mask = int.from_bytes(full.tobytes(), "little")
        self.expected = int.from_bytes((region & full).tobytes(), "little")
        self.records = np.dtype({"names": ["v"], "formats": [u.dtype], "offsets": [u.at + 2],
                                 "itemsize": u.row})
        self.select, self.width = select, width  # metric indices in [sample, channel] order
        self.k = u.n // width if select is None else len(select) // width
        first = np.arange(0, u.n, width) if select is None else select[:self.k]
        ts = u.fields.get("timestamp")
        # The first channel's timestamp varints: [k, bytes] positions in the metric bytes.
        self.time_bytes = None if ts is None else (
            first[:, None] * u.row + np.array([q + 2 for q in ts]))
        self.time_shifts = None if ts is None else np.uint64(7) * np.arange(
            len(ts), dtype=np.uint64)

    def read(self, payload: bytes):
        """``(rows [k, C], first-channel timestamps or None, ts, seq)``, or None: no match."""
        top: dict = {}
        pos = _leading_fields(payload, top)
        if pos is None:
            return None
        end = pos + self.span
        if len(payload) < end or int.from_bytes(
                memoryview(payload)[pos:end], "little") & self.mask != self.expected:
            return None
        if end < len(payload) and not _top_fields(payload, end, len(payload), top):
            return None
        values = np.frombuffer(payload, self.records, self.n, pos)["v"]
        if self.select is None:
            rows = values.reshape(self.k, self.width)
        else:
            rows = values[self.select].reshape(self.width, self.k).T
        times = None
        if self.time_bytes is not None:
            raw = np.frombuffer(payload, np.uint8, self.span, pos)[self.time_bytes] & 0x7F
            times = (raw.astype(np.uint64) << self.time_shifts).sum(axis=1, dtype=np.uint64)
        return rows, times, top.get(0x08), top.get(0x18)


def numeric_metric_names(payload: bytes) -> list[str]:
    """Names of the numeric metrics of a payload, in order, once each (for tools).

    Raises
    ------
    ValueError
        If the payload is not a Sparkplug B protobuf.
    """
    try:
        p = payload_class().FromString(payload)
    except Exception as e:
        raise ValueError(f"not a Sparkplug B payload: {e}"[:120]) from None
    names = [m.name for m in p.metrics
             if m.name and m.WhichOneof("value") in _NUMERIC_KINDS and m.datatype != BOOLEAN]
    return list(dict.fromkeys(names))


def _alias_table(metrics) -> dict:
    return {m.alias: (m.name, m.datatype) for m in metrics if m.name and m.HasField("alias")}


def _value(m, datatype: int, kind: str | None = None):
    """A metric's number (signed ints decoded, booleans 0/1), or None when it has none."""
    kind = kind or m.WhichOneof("value")
    if kind not in _NUMERIC_KINDS or m.is_null:
        return None
    v = getattr(m, kind)
    if kind == "int_value" and datatype in _SIGNED32 and v >= 2 ** 31:
        v -= 2 ** 32
    elif kind == "long_value" and datatype == _SIGNED64 and v >= 2 ** 63:
        v -= 2 ** 64
    return float(v)


def parse_template(template: str) -> tuple[str, str, int]:
    """``spBv1.0/{group}/DDATA/{edge_node}/{device}`` -> (filter, data type, device level).

    The filter covers every message type of the same groups and nodes
    (``spBv1.0/+/+/+/#``).

    Raises
    ------
    ValueError
        If the template is not a Sparkplug B data topic with ``{device}``.
    """
    levels = template.split("/")
    expected = {"DDATA": 5, "NDATA": 4}
    kind = levels[2] if len(levels) > 2 else ""
    if (levels[0] != NAMESPACE or kind not in expected or len(levels) != expected[kind]
            or levels.count("{device}") != 1 or levels[-1] != "{device}"):
        raise ValueError(
            f"a Sparkplug B input topic looks like {DEFAULT_TOPIC} (or "
            f"{NAMESPACE}/{{group}}/NDATA/{{device}}), got {template!r}")
    group = "+" if levels[1].startswith("{") else levels[1]
    node = levels[3]
    node = "+" if node.startswith("{") else node
    filter_ = f"{NAMESPACE}/{group}/+/{node}/#" if kind == "DDATA" else \
        f"{NAMESPACE}/{group}/+/+"
    return filter_, kind, len(levels) - 1
