"""Daemon config: precedence defaults < file < environment < CLI, and precise messages."""

from __future__ import annotations

import pytest

from edge.config import ConfigError, load_config, parse_broker_url


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"not checked here")  # load_config checks the file exists, not its content
    return path


def test_defaults_follow_the_schema(model):
    cfg = load_config({"model": str(model), "node": "pi"}, env={})
    assert (cfg.broker, cfg.qos, cfg.mqtt_version, cfg.threads, cfg.hop) == (
        "mqtt://localhost:1883", 1, "5", 1, 0)
    assert (cfg.input_topic, cfg.output_topic) == ("sensors/{device}/#",
                                                   "edge/{device}/classification")
    assert (cfg.max_devices, cfg.queue_size, cfg.stats_interval) == (1000, 10000, 30.0)
    assert (cfg.smoothing, cfg.min_confidence, cfg.on_change) == (1, 0.0, False)
    assert cfg.client_id == "sigmoid-edge-pi" and cfg.status_topic == "sigmoid-edge/pi/status"


def test_precedence_cli_over_env_over_file_over_defaults(model, tmp_path):
    conf = tmp_path / "edge.toml"
    conf.write_text(f'model = "{model}"\nqos = 0\nthreads = 2\nnode = "filenode"\n'
                    'hop = 3\n[postprocess]\nsmoothing = 4\non_change = true\n'
                    '[channels]\nx = "a.b"\n')
    env = {"SIGMOID_EDGE_QOS": "2", "SIGMOID_EDGE_THREADS": "3", "SIGMOID_EDGE_ON_CHANGE": "no"}
    cfg = load_config({"config": str(conf), "qos": 1}, env=env)
    assert cfg.qos == 1 and cfg.sources["qos"] == "--qos"  # CLI
    assert cfg.threads == 3 and cfg.sources["threads"] == "environment SIGMOID_EDGE_THREADS"
    assert cfg.on_change is False  # env beats file
    assert cfg.hop == 3 and cfg.smoothing == 4 and cfg.node == "filenode"  # file
    assert cfg.channels == {"x": "a.b"}
    assert cfg.mqtt_version == "5"  # default


def test_config_file_from_the_environment(model, tmp_path):
    conf = tmp_path / "edge.toml"
    conf.write_text(f'model = "{model}"\nmqtt_version = "3.1.1"\n')
    cfg = load_config({}, env={"SIGMOID_EDGE_CONFIG": str(conf)})
    assert cfg.mqtt_version == "3.1.1"


def test_password_from_env_or_file_never_the_config(model, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    cfg = load_config({"model": str(model), "username": "edge", "password_file": str(secret)},
                      env={})
    assert cfg.password == "s3cret" and "s3cret" not in repr(cfg)
    cfg = load_config({"model": str(model), "username": "edge"},
                      env={"SIGMOID_EDGE_PASSWORD": "fromenv"})
    assert cfg.password == "fromenv"
    conf = tmp_path / "bad.toml"
    conf.write_text('password = "x"\n')
    with pytest.raises(ConfigError, match="do not store the password"):
        load_config({"model": str(model), "config": str(conf)}, env={})


def test_channels_from_the_environment(model):
    cfg = load_config({"model": str(model)},
                      env={"SIGMOID_EDGE_CHANNELS": "power=ENERGY.Power, v=ENERGY.Voltage"})
    assert cfg.channels == {"power": "ENERGY.Power", "v": "ENERGY.Voltage"}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("qos = 3", r"qos \(config file .*\): must be 0, 1 or 2, got 3"),
        ("output_qos = -1", r"output_qos \(config file .*\): must be 0, 1 or 2, got -1"),
        ("qsize = 3", r"unknown key 'qsize'"),
        ("queue_size = 0", r"queue_size .*must be at least 1"),
        ('qos = "high"', r"qos \(config file .*\) must be an integer, got 'high'"),
        ("smoothing = 2", r"smoothing belongs in the \[postprocess\] table"),
        ("[postprocess]\nsmooth = 2", r"unknown key postprocess.smooth"),
        ('broker = "tcp://x:1"', r"broker .*mqtt:// or mqtts://"),
        ('broker = "mqtt://u:p@x:1"', r"do not put credentials in the broker URL"),
        ('node = "a/b"', r"node .*without '\+', '#', '/'"),
        ('output_topic = "edge/+/{device}"', r"output_topic .*must not contain wildcards"),
        ('input_topic = "s/{device}x/#"', r"input_topic .*exactly once as a whole topic level"),
        ('mqtt_version = "4"', r"mqtt_version .*must be 5 or 3.1.1"),
        ('[channels]\nx = "a..b"', r"channel 'x' has an invalid JSON path"),
        ("qos = [", r"is not valid TOML"),
        ('tls_cert = "/etc/hostname"', r"needs its key"),
    ],
)
def test_bad_values_name_key_source_and_fix(model, tmp_path, toml, message):
    conf = tmp_path / "edge.toml"
    conf.write_text(f'model = "{model}"\n{toml}\n')
    with pytest.raises(ConfigError, match=message):
        load_config({"config": str(conf)}, env={})


def test_missing_model_and_files(tmp_path):
    with pytest.raises(ConfigError, match="no model file given; pass --model"):
        load_config({}, env={})
    with pytest.raises(ConfigError, match="model .*does not exist"):
        load_config({"model": str(tmp_path / "nope.onnx")}, env={})
    with pytest.raises(ConfigError, match="config file .* does not exist"):
        load_config({"config": str(tmp_path / "nope.toml")}, env={})


@pytest.mark.parametrize(
    ("url", "host", "port", "tls"),
    [("mqtt://pi.local", "pi.local", 1883, False), ("mqtts://pi.local", "pi.local", 8883, True),
     ("mqtt://10.0.0.2:1884", "10.0.0.2", 1884, False), ("MQTTS://[::1]:9000", "::1", 9000, True)],
)
def test_broker_urls(url, host, port, tls):
    address = parse_broker_url(url)
    assert (address.host, address.port, address.tls) == (host, port, tls)
