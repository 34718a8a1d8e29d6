"""Daemon configuration: defaults < TOML file < ``SIGMOID_EDGE_*`` environment < command line.

Every key of ``docs/config.md`` is a field of :class:`Config`. Values are validated up
front, Frigate-style: a bad value stops the daemon before it connects, with a message that
names the key, where the value came from, what it was and what is allowed.

>>> cfg = load_config(cli={"model": "m.onnx", "broker": "mqtt://localhost:1883"}, env={})
>>> cfg.qos, cfg.input_topic
(1, 'sensors/{device}/#')
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge import topics
from edge.credentials import PasswordFileError, read_password
from edge.runtime import RUNTIMES

ENV_PREFIX = "SIGMOID_EDGE_"
# Characters that must never appear in a topic level we build (MQTT wildcards, separators,
# NUL and control characters).
_UNSAFE_LEVEL = re.compile(r"[+#/\x00-\x1f\x7f]")
# Device names also come from the network. Besides MQTT's wildcards and separator, refuse
# by Unicode general category (not by a hand list, which always misses some): controls
# (Cc), format characters such as bidi overrides and zero-width joiners (Cf), line and
# paragraph separators (Zl, Zp), surrogates (Cs), private use (Co) and unassigned (Cn), and
# every Default_Ignorable_Code_Point (Hangul fillers, variation selectors, tag characters):
# all of them can make a device look like another in logs and dashboards ("Trojan Source").
_UNSAFE_DEVICE = re.compile("[+#/]")
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Default_Ignorable_Code_Point from Unicode's DerivedCoreProperties.txt (Unicode 15.1; the
# property has been stable since 5.2 apart from additions inside these ranges).
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
    (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_IGNORABLE_RE = re.compile("[" + "".join(
    f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in _DEFAULT_IGNORABLE) + "]")
MAX_DEVICE_NAME = 128
LOG_LEVELS = ("debug", "info", "warning", "error")
# edge.capture.MODES, repeated so that loading the config needs no numpy.
CAPTURE_MODES = ("none", "uncertain", "anomalies", "all")
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


class ConfigError(ValueError):
    """A configuration value is wrong; the message says which, where from, and what to do."""


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker listens, parsed from an ``mqtt://`` or ``mqtts://`` URL."""

    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse ``mqtt://HOST[:PORT]`` (default 1883) or ``mqtts://HOST[:PORT]`` (default 8883).

    Raises
    ------
    ConfigError
        If the scheme is not mqtt/mqtts, the host is missing or the port is not a number.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"broker must be a URL like mqtt://HOST:1883 or mqtts://HOST:8883, got {url!r}"
        )
    try:
        parts = urlsplit(url)
    except ValueError as e:  # e.g. "Invalid IPv6 URL" for mqtt://[::1
        raise ConfigError(f"broker URL {url!r} is not a valid URL ({e}); an IPv6 host is "
                          "written mqtt://[::1]:1883") from None
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        raise ConfigError(
            f"broker URL scheme must be mqtt:// or mqtts:// (TLS), got {scheme + '://'!r} "
            f"in {url!r}"
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"broker URL {url!r} has an invalid port") from None
    if not parts.hostname:
        raise ConfigError(f"broker URL {url!r} has no host name")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"broker URL {url!r} must not have a path or query")
    if parts.username or parts.password:
        raise ConfigError(
            "do not put credentials in the broker URL; use --username and "
            "SIGMOID_EDGE_PASSWORD or --password-file"
        )
    tls = scheme == "mqtts"
    return BrokerAddress(parts.hostname, port or (8883 if tls else 1883), tls)


@dataclass
class Config:
    """All settings of ``sigmoid-edge run`` (see ``docs/config.md``).

    Extra keys beyond the schema: ``max_payload_bytes`` and ``max_depth`` (payload limits),
    ``max_pending_outputs`` (QoS 1 classifications not yet acknowledged by the broker, held
    in memory; more are counted as ``output_drops`` instead of published),
    ``gap_periods`` (a ``ts`` gap of more than this many sample periods restarts a window),
    ``keepalive`` (seconds), ``reconnect_min``/``reconnect_max`` (seconds between reconnect
    attempts, doubling with jitter), ``auth_retry`` (seconds between attempts after the
    broker refused the credentials), ``session_expiry`` (seconds the broker keeps a
    persistent session, see :attr:`persistent_session`) and ``password`` (only from
    ``SIGMOID_EDGE_PASSWORD`` or the password file, never from a file key or the command
    line).
    """

    model: str = ""
    broker: str = "mqtt://localhost:1883"
    client_id: str = ""
    qos: int = 1
    output_qos: int = 1
    node: str = ""
    input_topic: str = topics.INPUT
    # What input payloads are: json (also reads binary blocks by their magic), binary, cbor
    # or sparkplug (edge/formats.py, edge/sparkplug.py).
    payload: str = "json"
    output_topic: str = topics.OUTPUT
    mqtt_version: str = "5"
    # Many daemons, one site: "K/N" keeps only devices whose crc32(name) % N == K.
    shard: str = ""
    username: str = ""
    password_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    threads: int = 1
    runtime: str = "auto"
    hop: int = 0
    max_devices: int = 1000
    queue_size: int = 10000
    stats_interval: float = 30.0
    trusted_keys: list[str] = field(default_factory=list)
    log_level: str = "info"
    channels: dict[str, str] = field(default_factory=dict)
    smoothing: int = 1
    min_confidence: float = 0.0
    on_change: bool = False
    only_anomalies: bool = False
    # Stream-level anomaly rule: alarm when K of a device's last N windows are anomalous.
    anomaly_min_windows: int = 0  # K; 0 = off (every anomalous window is an alarm)
    anomaly_window_count: int = 0  # N; 0 = K (K anomalous windows in a row)
    # Windows worth labelling, published on sigmoid-edge/{node}/capture/{device} (edge/capture.py).
    capture: str = "none"
    capture_below: float = 0.0  # 0: min_confidence when set, else 0.6
    capture_rate: int = 60
    capture_sample: float = 0.0
    # Home Assistant MQTT discovery (edge/homeassistant.py).
    ha_discovery: bool = False
    ha_prefix: str = "homeassistant"
    # Prometheus /metrics and /healthz (edge/metrics.py); 0 = off.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # Keys beyond the schema.
    max_payload_bytes: int = 256 * 1024
    max_pending_outputs: int = 10000
    max_depth: int = 8
    gap_periods: float = 5.0
    keepalive: int = 60
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    auth_retry: float = 60.0
    session_expiry: int = 7 * 24 * 3600
    # Hostile sensors and models (README "Reliability and security").
    allow_ops: list[str] = field(default_factory=list)
    model_check_timeout: float = 20.0
    input_range_margin: float = 0.5
    journal: str = ""
    journal_fsync: bool = False
    journal_max_bytes: int = 16 * 2**20
    password: str = field(default="", repr=False)
    # Where each value came from ("default", "file", "env", "cli"), for error messages.
    sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    # Derived, filled by validate().
    @property
    def address(self) -> BrokerAddress:
        return parse_broker_url(self.broker)

    @property
    def persistent_session(self) -> bool:
        """A client id was chosen and QoS > 0: keep the session across restarts.

        The broker then queues QoS > 0 input while the daemon is down (MQTT 5 session
        expiry ``session_expiry``; clean session off for 3.1.1), and the daemon
        acknowledges a message only once it is in its buffers.
        """
        return self.qos > 0 and self.sources.get("client_id", "default") != "default"

    @property
    def extra_ops(self) -> frozenset[tuple[str, str]]:
        """``allow_ops`` as (domain, op_type) pairs."""
        from edge.contract import parse_op_name

        return frozenset(parse_op_name(name) for name in self.allow_ops)

    @property
    def journal_path(self) -> Path | None:
        """Where the samples of partial windows are journaled (None: no journal).

        Only with a persistent session; by default ``.<client_id>.journal`` beside the
        model file (a directory a pushed model is written to anyway).
        """
        if not self.persistent_session or self.journal.lower() == "off":
            return None
        if self.journal:
            return Path(self.journal)
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", self.client_id)[:100]
        return Path(self.model).resolve().parent / f".{safe}.journal"

    @property
    def status_topic(self) -> str:
        return topics.node_topic(topics.STATUS, self.node)

    @property
    def stats_topic(self) -> str:
        return topics.node_topic(topics.STATS, self.node)

    @property
    def info_topic(self) -> str:
        return topics.node_topic(topics.INFO, self.node)

    @property
    def errors_topic(self) -> str:
        return topics.node_topic(topics.ERRORS, self.node)

    @property
    def model_topic(self) -> str:
        return topics.node_topic(topics.MODEL, self.node)

    @property
    def capture_topic(self) -> str:
        return topics.node_topic(topics.CAPTURE, self.node)

    @property
    def capture_threshold(self) -> float:
        """``capture_below``, or ``min_confidence`` when that is set, or 0.6."""
        return self.capture_below or self.min_confidence or 0.6


_POSTPROCESS_KEYS = ("smoothing", "min_confidence", "on_change", "only_anomalies",
                     "anomaly_min_windows", "anomaly_window_count")
_INTERNAL = ("sources", "password")
FIELDS = {f.name: f for f in dataclasses.fields(Config) if f.name not in _INTERNAL}


def load_config(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    path: str | os.PathLike | None = None,
) -> Config:
    """Merge defaults, a TOML file, the environment and command-line values, then validate.

    Parameters
    ----------
    cli : mapping
        Command-line values by key; ``None`` values mean "not given".
    env : mapping, optional
        The environment (``os.environ`` when omitted); only ``SIGMOID_EDGE_*`` is read.
    path : path, optional
        A TOML file with the keys of ``docs/config.md``. When omitted, ``cli["config"]``
        or ``SIGMOID_EDGE_CONFIG`` is used if set.

    Returns
    -------
    Config
        Validated; ``node`` and ``client_id`` are filled in and the password is read.

    Raises
    ------
    ConfigError
        Naming the key, its source and what is allowed.
    """
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    env = os.environ if env is None else env
    cfg = Config()
    sources = {name: "default" for name in FIELDS}
    path = path or cli.get("config") or env.get(ENV_PREFIX + "CONFIG") or None
    if path:
        for key, value in _read_toml(Path(path)).items():
            setattr(cfg, key, _coerce(key, value, f"config file {path}"))
            sources[key] = f"config file {path}"
    for key in FIELDS:
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is not None and raw != "":
            where = f"environment {ENV_PREFIX}{key.upper()}"
            setattr(cfg, key, _coerce(key, _from_env(key, raw, where), where))
            sources[key] = where
    for key, value in cli.items():
        if key in FIELDS:
            where = f"--{key.replace('_', '-')}"
            setattr(cfg, key, _coerce(key, value, where))
            sources[key] = where
    cfg.sources = sources
    cfg.password = _read_password(cfg, env)
    validate(cfg)
    return cfg


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start}); save it "
                          "as UTF-8") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "channels":
            if not isinstance(value, dict):
                raise ConfigError(f"config file {path}: [channels] must be a table")
            flat["channels"] = value
        elif key == "postprocess":
            if not isinstance(value, dict):
                raise ConfigError(f"config file {path}: [postprocess] must be a table")
            for sub, v in value.items():
                if sub not in _POSTPROCESS_KEYS:
                    raise ConfigError(
                        f"config file {path}: unknown key postprocess.{sub}; "
                        f"known: {', '.join(_POSTPROCESS_KEYS)}"
                    )
                flat[sub] = v
        elif key in _POSTPROCESS_KEYS:
            raise ConfigError(f"config file {path}: {key} belongs in the [postprocess] table")
        elif key == "password":
            raise ConfigError(
                f"config file {path}: do not store the password in the config; use "
                "password_file or the SIGMOID_EDGE_PASSWORD environment variable"
            )
        elif key not in FIELDS:
            close = [k for k in FIELDS if k.startswith(key[:3])]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"config file {path}: unknown key {key!r}{hint}")
        else:
            flat[key] = value
    return flat


def _from_env(key: str, raw: str, where: str) -> Any:
    """Turn an environment string into the value type the key wants."""
    if key == "channels":
        # SIGMOID_EDGE_CHANNELS="x=ENERGY.Power,y=ENERGY.Voltage"
        out = {}
        for item in raw.split(","):
            name, sep, path = item.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise ConfigError(
                    f"{where} must look like 'name=json.path,name2=path2', got {raw!r}"
                )
            out[name.strip()] = path.strip()
        return out
    if key in ("trusted_keys", "allow_ops"):
        return [p.strip() for p in raw.split(",") if p.strip()]
    return raw


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(key: str, value: Any, where: str) -> Any:
    """Convert ``value`` to the type of field ``key``; strings (env, CLI) are parsed."""
    default = FIELDS[key].default
    if key == "mqtt_version":
        text = str(value).strip()
        if text in ("5", "5.0"):
            return "5"
        if text in ("3.1.1", "311", "3"):
            return "3.1.1"
        raise ConfigError(f"mqtt_version ({where}) must be 5 or 3.1.1, got {value!r}")
    if key == "channels":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(
                f"channels ({where}) must map channel names to JSON paths (strings), "
                f"got {value!r}"
            )
        return dict(value)
    if key in ("trusted_keys", "allow_ops"):
        if isinstance(value, str):
            value = [value]
        what = "file paths" if key == "trusted_keys" else "ONNX operator names"
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} ({where}) must be a list of {what}, got {value!r}")
        return list(value)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{key} ({where}) must be true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool):
            raise ConfigError(f"{key} ({where}) must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{key} ({where}) must be an integer, got {value!r}") from None
    if isinstance(default, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key} ({where}) must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} ({where}) must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key} ({where}) must be a finite number, got {value!r}")
        return number
    if not isinstance(value, str):
        raise ConfigError(f"{key} ({where}) must be a string, got {value!r}")
    return value


def _read_password(cfg: Config, env: Mapping[str, str]) -> str:
    try:
        return read_password(cfg.password_file, env)
    except PasswordFileError as e:
        raise ConfigError(f"password_file ({cfg.sources.get('password_file')}): {e}") from None


def _where(cfg: Config, key: str) -> str:
    return cfg.sources.get(key, "default")


def _fail(cfg: Config, key: str, message: str) -> ConfigError:
    return ConfigError(f"{key} ({_where(cfg, key)}): {message}")


def validate(cfg: Config) -> Config:
    """Check every value and fill in derived defaults (``node``, ``client_id``).

    Files named by the config (model, TLS, keys) must exist; the model itself is loaded by
    ``--check-config`` (see :func:`edge.models.load_model`), not here.
    """
    if not cfg.model:
        raise ConfigError(
            "model: no model file given; pass --model PATH (or model = \"...\" in the "
            "config file, or SIGMOID_EDGE_MODEL)"
        )
    if not Path(cfg.model).is_file():
        raise _fail(cfg, "model", f"model file {cfg.model} does not exist")
    try:
        address = parse_broker_url(cfg.broker)
    except ConfigError as e:
        raise _fail(cfg, "broker", str(e)) from None
    for key in ("qos", "output_qos"):
        if getattr(cfg, key) not in (0, 1, 2):
            raise _fail(cfg, key, f"must be 0, 1 or 2, got {getattr(cfg, key)}")
    if not cfg.node:
        cfg.node = _default_node()
    if not check_node_name(cfg.node):
        raise _fail(cfg, "node", f"{NODE_NAME_RULE}, got {cfg.node!r}")
    if not cfg.client_id:
        cfg.client_id = f"sigmoid-edge-{cfg.node}"
    if len(cfg.client_id.encode()) > 65535:
        raise _fail(cfg, "client_id", "is too long")
    if not cfg.ha_prefix or any(not lv or _UNSAFE_LEVEL.search(lv)
                                for lv in cfg.ha_prefix.split("/")):
        raise _fail(cfg, "ha_prefix", "must be Home Assistant's discovery prefix (default "
                    f"homeassistant): no wildcards or empty levels, got {cfg.ha_prefix!r}")
    _check_payload(cfg)
    _check_template(cfg, "input_topic", subscribe=True)
    if topics.split_share(cfg.input_topic)[0] and cfg.mqtt_version != "5":
        raise _fail(cfg, "input_topic", "a shared subscription ($share/GROUP/...) needs MQTT 5; "
                    "set mqtt_version = 5, or use --shard K/N on an MQTT 3.1.1 broker")
    if cfg.shard:
        try:
            shard_of(cfg.shard)
        except ValueError as e:
            raise _fail(cfg, "shard", str(e)) from None
    _check_template(cfg, "output_topic", subscribe=False)
    for key in ("threads", "max_devices", "queue_size", "max_pending_outputs", "max_payload_bytes",
                "max_depth"):
        if getattr(cfg, key) < 1:
            raise _fail(cfg, key, f"must be at least 1, got {getattr(cfg, key)}")
    if not 0 <= cfg.metrics_port <= 65535:
        raise _fail(cfg, "metrics_port", "must be a TCP port (1-65535), or 0 for no metrics "
                    f"server, got {cfg.metrics_port}")
    if not cfg.metrics_host or any(c.isspace() for c in cfg.metrics_host):
        raise _fail(cfg, "metrics_host", "must be an address to listen on (127.0.0.1 for this "
                    f"machine only, 0.0.0.0 for every interface), got {cfg.metrics_host!r}")
    if cfg.hop < 0:
        raise _fail(cfg, "hop", f"must be 0 (the model's hop) or positive, got {cfg.hop}")
    if cfg.stats_interval <= 0:
        raise _fail(cfg, "stats_interval", f"must be positive seconds, got {cfg.stats_interval}")
    if cfg.smoothing < 1:
        raise _fail(cfg, "smoothing", f"must be at least 1 (1 = off), got {cfg.smoothing}")
    if cfg.anomaly_min_windows < 0:
        raise _fail(cfg, "anomaly_min_windows", "must be 0 (off) or the K of 'K of the last N "
                    f"windows', got {cfg.anomaly_min_windows}")
    if cfg.anomaly_window_count and not cfg.anomaly_min_windows:
        raise _fail(cfg, "anomaly_window_count", "needs anomaly_min_windows (the K of 'K of "
                    "the last N windows')")
    if cfg.anomaly_window_count and cfg.anomaly_window_count < cfg.anomaly_min_windows:
        raise _fail(cfg, "anomaly_window_count", "must be at least anomaly_min_windows "
                    f"({cfg.anomaly_min_windows}), got {cfg.anomaly_window_count}")
    if not 0.0 <= cfg.min_confidence <= 1.0:
        raise _fail(cfg, "min_confidence", f"must be between 0 and 1, got {cfg.min_confidence}")
    if cfg.capture not in CAPTURE_MODES:
        raise _fail(cfg, "capture", f"must be one of {', '.join(CAPTURE_MODES)}, "
                    f"got {cfg.capture!r}")
    if not 0.0 <= cfg.capture_below <= 1.0:
        raise _fail(cfg, "capture_below", f"must be between 0 and 1, got {cfg.capture_below}")
    if cfg.capture_rate < 1:
        raise _fail(cfg, "capture_rate", "must be at least 1 capture per device per hour "
                    f"(use capture = \"none\" to turn captures off), got {cfg.capture_rate}")
    if not 0.0 <= cfg.capture_sample <= 1.0:
        raise _fail(cfg, "capture_sample", f"must be a fraction between 0 and 1, got "
                    f"{cfg.capture_sample}")
    if cfg.gap_periods <= 0:
        raise _fail(cfg, "gap_periods", f"must be positive, got {cfg.gap_periods}")
    if not 0 < cfg.reconnect_min <= cfg.reconnect_max:
        raise _fail(cfg, "reconnect_min", "must be positive and at most reconnect_max, got "
                    f"{cfg.reconnect_min} (reconnect_max {cfg.reconnect_max})")
    if cfg.model_check_timeout < 0:
        raise _fail(cfg, "model_check_timeout", "must be seconds, 0 to check in-process with "
                    f"no limit, got {cfg.model_check_timeout}")
    if cfg.input_range_margin < 0:
        raise _fail(cfg, "input_range_margin", f"must be >= 0, got {cfg.input_range_margin}")
    if cfg.journal_max_bytes < 4096:
        raise _fail(cfg, "journal_max_bytes", f"must be at least 4096, got "
                    f"{cfg.journal_max_bytes}")
    for name in cfg.allow_ops:
        if not name or not name.rpartition(":")[2] or any(c.isspace() for c in name):
            raise _fail(cfg, "allow_ops", f"{name!r} is not an operator name like Loop or "
                        "com.microsoft:QGemm")
    if cfg.auth_retry <= 0:
        raise _fail(cfg, "auth_retry", f"must be positive seconds, got {cfg.auth_retry}")
    if not 0 <= cfg.session_expiry <= 0xFFFFFFFF:
        raise _fail(cfg, "session_expiry", f"must be 0 to 4294967295 s, got {cfg.session_expiry}")
    if not 5 <= cfg.keepalive <= 65535:
        raise _fail(cfg, "keepalive", f"must be between 5 and 65535 s, got {cfg.keepalive}")
    if cfg.runtime not in RUNTIMES:
        raise _fail(cfg, "runtime", f"must be one of {', '.join(RUNTIMES)}, got {cfg.runtime!r}")
    if cfg.log_level.lower() not in LOG_LEVELS:
        raise _fail(cfg, "log_level", f"must be one of {', '.join(LOG_LEVELS)}")
    cfg.log_level = cfg.log_level.lower()
    for name, path in cfg.channels.items():
        if not name or not path or any(not part for part in path.split(".")):
            raise _fail(
                cfg, "channels", f"channel {name!r} has an invalid JSON path {path!r} "
                "(dot-separated keys, e.g. ENERGY.Power)"
            )
    for key in ("tls_ca", "tls_cert", "tls_key"):
        value = getattr(cfg, key)
        if value and not Path(value).is_file():
            raise _fail(cfg, key, f"file {value} does not exist")
    if cfg.tls_key and not cfg.tls_cert:
        raise _fail(cfg, "tls_key", "a client key needs a client certificate (tls_cert)")
    if cfg.tls_cert and not cfg.tls_key:
        raise _fail(cfg, "tls_cert", "a client certificate needs its key (tls_key)")
    if (cfg.tls_ca or cfg.tls_cert) and not address.tls:
        raise _fail(
            cfg, "broker", f"TLS files are set but the URL {cfg.broker} is not mqtts://"
        )
    if cfg.password and not cfg.username:
        raise _fail(cfg, "username", "a password is set but no username; pass --username")
    for key_path in cfg.trusted_keys:
        if not Path(key_path).is_file():
            raise _fail(cfg, "trusted_keys", f"key file {key_path} does not exist")
    return cfg


def _check_payload(cfg: Config) -> None:
    """``payload`` is a known format whose extra is installed; Sparkplug has its own topic."""
    from edge import formats

    if cfg.payload not in formats.FORMATS:
        raise _fail(cfg, "payload", f"must be one of {', '.join(formats.FORMATS)}, got "
                    f"{cfg.payload!r}")
    try:
        formats.check_available(cfg.payload)
    except ImportError as e:
        raise _fail(cfg, "payload", str(e)) from None
    if cfg.payload != "sparkplug":
        return
    from edge import sparkplug

    if _where(cfg, "input_topic") == "default":
        cfg.input_topic = sparkplug.DEFAULT_TOPIC
    try:
        sparkplug.parse_template(cfg.input_topic)
    except ValueError as e:
        raise _fail(cfg, "input_topic", f"with payload sparkplug: {e}") from None


def shard_of(text: str) -> tuple[int, int]:
    """``"1/3"`` -> ``(1, 3)``: this daemon keeps the devices whose hash mod 3 is 1.

    Raises
    ------
    ValueError
        If ``text`` is not ``K/N`` with whole numbers ``0 <= K < N``.
    """
    k, sep, n = text.partition("/")
    try:
        k, n = int(k), int(n)
    except ValueError:
        k = n = -1
    if not sep or not 0 <= k < n:
        raise ValueError(f"must be K/N with whole numbers 0 <= K < N (e.g. 0/2 and 1/2 for two "
                         f"daemons), got {text!r}")
    return k, n


def _check_template(cfg: Config, key: str, subscribe: bool) -> None:
    share, template = topics.split_share(getattr(cfg, key))
    group = share[len(topics.SHARE):-1]
    if share and (not subscribe or not group or _UNSAFE_LEVEL.search(group)):
        raise _fail(cfg, key, f"a shared subscription is $share/GROUP/FILTER with a GROUP "
                    f"without wildcards, got {getattr(cfg, key)!r}")
    levels = template.split("/")
    if template.count("{device}") != 1 or "{device}" not in levels:
        raise _fail(
            cfg, key, f"must contain {{device}} exactly once as a whole topic level "
            f"(e.g. sensors/{{device}}/#), got {template!r}"
        )
    for i, level in enumerate(levels):
        if level == "{device}":
            continue
        if subscribe and _PLACEHOLDER.fullmatch(level):
            continue  # {group}, {edge_node}...: any value, like '+'
        if "{" in level or "}" in level:
            raise _fail(cfg, key, "placeholders must be whole levels like {device} (or "
                        f"{{group}} in an input topic), got {template!r}")
        if subscribe:
            if "#" in level and (level != "#" or i != len(levels) - 1):
                raise _fail(cfg, key, f"'#' must be the last level on its own, got {template!r}")
            if "+" in level and level != "+":
                raise _fail(cfg, key, f"'+' must be a whole level, got {template!r}")
        elif _UNSAFE_LEVEL.search(level) or not level:
            raise _fail(cfg, key, f"must not contain wildcards or empty levels, got {template!r}")


def _default_node() -> str:
    name = socket.gethostname().split(".")[0] or "edge"
    return _UNSAFE_LEVEL.sub("_", name)


def check_device_name(name: str) -> bool:
    """True when ``name`` is safe to put into a topic level.

    At most :data:`MAX_DEVICE_NAME` characters; no ``+``, ``#``, ``/``; no character of
    the Unicode categories Cc, Cf, Cs, Co, Cn, Zl, Zp; no default-ignorable code point.
    """
    if not name or len(name) > MAX_DEVICE_NAME or _UNSAFE_DEVICE.search(name):
        return False
    if name.isascii():  # the common case: printable ASCII has no such characters
        return name.isprintable()
    category = unicodedata.category
    return (_IGNORABLE_RE.search(name) is None
            and not any(category(c) in _UNSAFE_CATEGORIES for c in name))


NODE_NAME_RULE = (f"must be one topic level of 1 to {MAX_DEVICE_NAME} characters without '+', "
                  "'#', '/', control or invisible characters")


def check_node_name(name: str) -> bool:
    """True when ``name`` can be the node in ``sigmoid-edge/{node}/...`` (see NODE_NAME_RULE).

    The daemon (``node``) and ``sigmoid-train push --node`` check with this, so a push never
    goes to a topic no daemon can have; the rule is :func:`check_device_name`'s.
    """
    return check_device_name(name)
