#!/usr/bin/env bash
# Install the sigmoid-edge daemon as a hardened systemd service on Raspberry Pi OS (64-bit or
# 32-bit) or Debian/Ubuntu (arm64, amd64 or armhf). Idempotent: run it again to upgrade; your
# config and secrets are never overwritten.
#
#   sudo deploy/install-pi.sh                       # install from this checkout
#   sudo deploy/install-pi.sh --source dist/sigmoid_edge-0.1.0-py3-none-any.whl
#   sudo deploy/install-pi.sh --model model.int8.onnx   # also install a model and start
#   sudo deploy/install-pi.sh --uninstall [--purge]
#
# On 32-bit ARM (Pi Zero/Zero W/1/2, any Pi on 32-bit Raspberry Pi OS) onnxruntime has no
# wheel: the daemon runs models with its numpy runtime, numpy comes from apt (python3-numpy)
# and the venv sees it (--system-site-packages).
#
# What it does: apt installs python3-venv; creates the system user `sigmoid-edge`; a venv
# in /opt/sigmoid-edge/venv with ONLY the edge install (no trainer); /etc/sigmoid-edge/
# config.toml (0640) and sigmoid-edge.env (0600, the broker password); the unit
# /etc/systemd/system/sigmoid-edge.service, enabled (started once a model is in place).
#
# Environment: DESTDIR=/some/dir installs the files under that root instead of / and skips
# apt, the user, file ownership and systemctl (for packaging and tests; a venv made there is
# not relocatable). PYTHON=python3 picks the interpreter for the venv.
set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SELF_DIR/.." && pwd)
DESTDIR=${DESTDIR:-}
PYTHON=${PYTHON:-python3}
SERVICE=sigmoid-edge
SERVICE_USER=sigmoid-edge
PREFIX=/opt/sigmoid-edge
CONF_DIR=/etc/sigmoid-edge
STATE_DIR=/var/lib/sigmoid-edge
UNIT_DIR=/etc/systemd/system
MODEL_NAME=model.int8.onnx
RUNTIME=onnxruntime

SOURCE=$REPO
MODEL=
ACTION=install
PURGE=0
DRY_RUN=0
START=1

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    cat <<EOF
Options:
  --source PATH   a checkout or a wheel of sigmoid-edge (default: $REPO)
  --model FILE    copy FILE to $STATE_DIR/$MODEL_NAME and (re)start the service
  --no-start      install and enable, but do not start or restart the service
  --uninstall     stop and remove the service and $PREFIX (keeps config, state, user)
  --purge         with --uninstall: also remove $CONF_DIR, $STATE_DIR and the user
  --dry-run       print what would be done, change nothing
  -h, --help      this text
EOF
}

die() { echo "install-pi: error: $*" >&2; exit 1; }
say() { echo "install-pi: $*"; }
# Every change goes through run, so --dry-run shows it instead of doing it.
run() {
    echo "+ $*"
    if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        --source) [ "$#" -ge 2 ] || die "--source needs a path"; SOURCE=$2; shift ;;
        --model) [ "$#" -ge 2 ] || die "--model needs a file"; MODEL=$2; shift ;;
        --no-start) START=0 ;;
        --uninstall) ACTION=uninstall ;;
        --purge) PURGE=1 ;;
        --dry-run) DRY_RUN=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

# onnxruntime publishes Linux wheels for x86_64 and aarch64 only. A 64-bit kernel with a
# 32-bit (armhf) userland, as on older Raspberry Pi OS images, is 32-bit for pip too: there
# the daemon uses its numpy runtime (edge/runtime/numpy_backend.py).
check_architecture() {
    local machine=${SIGMOID_EDGE_ARCH:-$(uname -m)} userland=
    if [ -z "${SIGMOID_EDGE_ARCH:-}" ] && command -v dpkg >/dev/null; then
        userland=$(dpkg --print-architecture)
    fi
    case "$machine:$userland" in
        aarch64:arm64 | aarch64: | arm64:* | x86_64:amd64 | x86_64: | amd64:*) return 0 ;;
        aarch64:armhf | aarch64:armel | armv6*:* | armv7*:* | armv8*:* | armhf:* | armel:*)
            RUNTIME=numpy
            say "32-bit ARM (${machine}${userland:+, userland $userland}): onnxruntime has no wheel here, installing the numpy runtime (numpy from apt)" ;;
        *) die "unsupported architecture ${machine}${userland:+ ($userland)}: sigmoid-edge supports arm64 (aarch64), amd64 (x86_64) and 32-bit ARM (armv6l/armv7l, armhf)" ;;
    esac
}

check_root() {
    [ -n "$DESTDIR" ] || [ "$DRY_RUN" = 1 ] || [ "$(id -u)" = 0 ] \
        || die "run as root: sudo $0"
}

have_systemd() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; }

# install(1) with owner and group, except into a staging root where the user does not exist.
install_as() {
    local owner=$1
    shift
    if [ -n "$DESTDIR" ]; then
        run install "$@"
    else
        run install -o "${owner%:*}" -g "${owner#*:}" "$@"
    fi
}

apt_dependencies() {
    [ -z "$DESTDIR" ] || return 0
    local packages=()
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3 python3-venv)
    # numpy from the distribution on 32-bit ARM: pip would build it from source where
    # piwheels is not configured or not reachable (an hour on a Pi Zero).
    if [ "$RUNTIME" = numpy ] && ! "$PYTHON" -c 'import numpy' 2>/dev/null; then
        packages+=(python3-numpy)
    fi
    [ "${#packages[@]}" -gt 0 ] || return 0
    command -v apt-get >/dev/null || die "apt-get is missing; install ${packages[*]}"
    run apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
}

create_user() {
    [ -z "$DESTDIR" ] || return 0
    if getent passwd "$SERVICE_USER" >/dev/null; then return 0; fi
    run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "sigmoid-edge daemon" "$SERVICE_USER"
}

# The package spec for pip: the edge install (core dependencies) plus the `signing` extra when
# this version of sigmoid-edge has one; never the `train` extra.
package_spec() {
    local extras
    extras=$("$PYTHON" - "$SOURCE" <<'EOF'
import sys, zipfile, pathlib
src = pathlib.Path(sys.argv[1])
if src.suffix == ".whl":
    with zipfile.ZipFile(src) as whl:
        meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        text = whl.read(meta).decode()
    extras = {line.split(":", 1)[1].strip() for line in text.splitlines()
              if line.startswith("Provides-Extra:")}
else:
    import tomllib
    project = tomllib.loads((src / "pyproject.toml").read_text())["project"]
    extras = set(project.get("optional-dependencies", {}))
print("signing" if "signing" in extras else "")
EOF
)
    if [ -n "$extras" ]; then echo "${SOURCE}[$extras]"; else echo "$SOURCE"; fi
}

install_venv() {
    local venv=$DESTDIR$PREFIX/venv spec
    [ -e "$SOURCE" ] || die "--source $SOURCE does not exist"
    if [ -d "$SOURCE" ] && [ ! -f "$SOURCE/pyproject.toml" ]; then
        die "--source $SOURCE is not a sigmoid-edge checkout (no pyproject.toml)"
    fi
    spec=$(package_spec)
    run install -d -m 0755 "$DESTDIR$PREFIX"
    if [ ! -x "$venv/bin/python" ]; then
        if [ "$RUNTIME" = numpy ]; then
            run "$PYTHON" -m venv --system-site-packages "$venv"  # Debian's python3-numpy
        else
            run "$PYTHON" -m venv "$venv"
        fi
    fi
    # --upgrade: a re-run installs the new version of the source; dependencies stay if they fit.
    run "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$spec"
    if [ "$DRY_RUN" = 0 ]; then
        if "$venv/bin/python" -c 'import onnx' 2>/dev/null; then
            die "the venv has onnx installed: it should hold only the edge install"
        fi
        local modules=paho.mqtt,numpy,edge.runtime.numpy_backend
        [ "$RUNTIME" = numpy ] || modules=onnxruntime,$modules
        "$venv/bin/python" -c "import $modules" \
            || die "the edge install in $venv is broken (see the pip output above)"
        say "runtime: $("$venv/bin/python" -c 'from edge.runtime import resolve; print(resolve())')"
    fi
    if [ -f "$REPO/README.md" ]; then
        run install -m 0644 "$REPO/README.md" "$DESTDIR$PREFIX/README.md"
    fi
}

install_config() {
    install_as "root:$SERVICE_USER" -d -m 0750 "$DESTDIR$CONF_DIR"
    if [ -e "$DESTDIR$CONF_DIR/config.toml" ]; then
        say "keeping existing $CONF_DIR/config.toml"
    else
        install_as "root:$SERVICE_USER" -m 0640 "$SELF_DIR/config/config.toml" "$DESTDIR$CONF_DIR/config.toml"
    fi
    if [ -e "$DESTDIR$CONF_DIR/$SERVICE.env" ]; then
        say "keeping existing $CONF_DIR/$SERVICE.env"
        run chmod 0600 "$DESTDIR$CONF_DIR/$SERVICE.env"
    else
        install_as root:root -m 0600 "$SELF_DIR/config/$SERVICE.env" "$DESTDIR$CONF_DIR/$SERVICE.env"
    fi
    install_as "$SERVICE_USER:$SERVICE_USER" -d -m 0750 "$DESTDIR$STATE_DIR"
    if [ -n "$MODEL" ]; then
        [ -f "$MODEL" ] || die "--model $MODEL is not a file"
        install_as "$SERVICE_USER:$SERVICE_USER" -m 0640 "$MODEL" "$DESTDIR$STATE_DIR/$MODEL_NAME"
    fi
}

install_unit() {
    run install -d -m 0755 "$DESTDIR$UNIT_DIR"
    run install -m 0644 "$SELF_DIR/systemd/$SERVICE.service" "$DESTDIR$UNIT_DIR/$SERVICE.service"
    if ! have_systemd; then
        say "systemd is not running here (or DESTDIR is set): not enabling the service"
        return 0
    fi
    run systemctl daemon-reload
    run systemctl enable "$SERVICE"
    if [ "$START" = 0 ]; then
        return 0
    elif [ -e "$STATE_DIR/$MODEL_NAME" ]; then
        run systemctl restart "$SERVICE"
    else
        say "no model yet: copy one to $STATE_DIR/$MODEL_NAME (or re-run with --model FILE), then: sudo systemctl start $SERVICE"
    fi
}

uninstall() {
    if have_systemd && [ -e "$UNIT_DIR/$SERVICE.service" ]; then
        run systemctl disable --now "$SERVICE"
    fi
    run rm -f "$DESTDIR$UNIT_DIR/$SERVICE.service"
    if have_systemd; then run systemctl daemon-reload; fi
    run rm -rf "$DESTDIR$PREFIX"
    if [ "$PURGE" = 1 ]; then
        run rm -rf "$DESTDIR$CONF_DIR" "$DESTDIR$STATE_DIR"
        if [ -z "$DESTDIR" ] && getent passwd "$SERVICE_USER" >/dev/null; then
            run userdel "$SERVICE_USER"
        fi
    else
        say "kept $CONF_DIR, $STATE_DIR and the user $SERVICE_USER (--purge removes them)"
    fi
}

check_root
if [ "$ACTION" = uninstall ]; then
    uninstall
    say "uninstalled"
    exit 0
fi
[ "$PURGE" = 0 ] || die "--purge goes with --uninstall"
check_architecture
apt_dependencies
create_user
install_venv
install_config
install_unit
say "installed into ${DESTDIR:-/}: edit $CONF_DIR/config.toml and $CONF_DIR/$SERVICE.env; logs: journalctl -u $SERVICE -f"
