#!/usr/bin/env bash
# Verify the numpy runtime on 32-bit Raspberry Pi CPUs without a Raspberry Pi.
#
# Builds a Debian armhf root (armv7, what 32-bit Raspberry Pi OS on a Pi 2/3/4/Zero 2 runs)
# with debootstrap, and runs it under qemu user-mode emulation of a Cortex-A7 (Pi 2) through
# binfmt_misc. In a venv with ONLY the edge install (the repo's wheel, no onnxruntime: there
# is no 32-bit ARM wheel; numpy is Debian's python3-numpy, since piwheels may be out of reach):
#   1. a smoke inference: float and int8 models fitted on this machine (every feature family,
#      the int8 variants the trainer chooses among) run by the numpy runtime must give this
#      machine's onnxruntime probabilities (deploy/armhf/smoke_models.py);
#   2. the edge test subset (test files that need neither scikit-learn, the trainer, onnx nor
#      onnxruntime at import: their models come from tests/onnx_writer.py, which writes the
#      bytes onnx writes; a test inside them that needs onnx skips itself), without the slow
#      and fuzz ones, against a mosquitto inside the root, runtime numpy.
# With CPU=arm1176 (Pi Zero / Pi 1, ARMv6) it builds a Debian armel root instead: Debian's
# armhf needs ARMv7, and Raspberry Pi OS's own armv6 archive is not a Debian mirror.
# A result line goes to stdout and to $RESULTS (TSV).
#
# Usage (as root, on an amd64 Debian/Ubuntu host with qemu-user-static and debootstrap):
#   sudo deploy/armhf/verify.sh                  # Cortex-A7, armhf
#   sudo CPU=arm1176 deploy/armhf/verify.sh      # ARM1176, armel
# Environment:
#   ROOT=/var/tmp/sigmoid-edge-<arch>   the root (reused across runs)
#   SUITE=bookworm  MIRROR=<debian mirror URL> (debootstrap's default when empty)
#   HOST_PYTHON=.venv/bin/python       a Python with the trainer installed, to build the models
#   RESULTS=$ROOT/results.tsv  SKIP_TESTS=1 (smoke inference only)
#   EDGE_TESTS="tests/test_a.py ..."   the test files to run (default: see above)
# Not part of `make test`: it needs root, binfmt_misc and a lot of time.
set -euo pipefail

die() { echo "verify-armhf: $*" >&2; exit 1; }

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CPU=${CPU:-cortex-a7}
case "$CPU" in
    arm1176) ARCH=armel ;;
    *) ARCH=armhf ;;
esac
ROOT=${ROOT:-/var/tmp/sigmoid-edge-$ARCH}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-}
RESULTS=${RESULTS:-$ROOT/results.tsv}
SKIP_TESTS=${SKIP_TESTS:-0}
if [ -z "${HOST_PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then HOST_PYTHON=$REPO/.venv/bin/python; else HOST_PYTHON=python3; fi
fi

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and binfmt_misc need it)"
[ "$(uname -m)" = x86_64 ] || die "needs an x86_64 host"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install -y debootstrap"
QEMU=$(command -v qemu-arm-static || true)
[ -n "$QEMU" ] || die "qemu-arm-static is missing: apt-get install -y qemu-user-static"
"$HOST_PYTHON" -c 'import onnx, onnxruntime, trainer' 2>/dev/null \
    || die "$HOST_PYTHON lacks the trainer (run 'make test' once, or set HOST_PYTHON)"

# shellcheck source=SCRIPTDIR/../lib/emulated-root.sh
. "$REPO/deploy/lib/emulated-root.sh"

# The test tools the subset imports, from PyPI (cbor2, protobuf: pure Python) or Debian (the
# root has no compiler). armhf: cryptography's armv7l wheels need cffi, which has none:
# Debian's 1.15 serves cryptography < 46; jinja2's MarkupSafe has armv7l wheels. armel
# (armv6l): no wheels at all for those two, Debian's python3-cryptography (38) and jinja2.
case "$ARCH" in
    armhf) TEST_PACKAGES=python3-cffi TEST_PIP="cbor2 protobuf jinja2 'cryptography<46'" ;;
    *) TEST_PACKAGES="python3-cryptography python3-jinja2" TEST_PIP="cbor2 protobuf" ;;
esac

make_root() {
    if [ -e "$ROOT/.sigmoid-edge-root-ok" ]; then return 0; fi
    echo "== debootstrap $SUITE $ARCH into $ROOT (10-30 minutes under emulation)"
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    # shellcheck disable=SC2086  # MIRROR is empty (debootstrap's default) or one URL
    debootstrap --arch="$ARCH" --variant=minbase \
        --include="python3,python3-venv,python3-numpy,${TEST_PACKAGES// /,},ca-certificates,mosquitto,mosquitto-clients" \
        "$SUITE" "$ROOT" $MIRROR
    touch "$ROOT/.sigmoid-edge-root-ok"
}

# Run a shell command inside the root as the emulated CPU, with a clean environment.
in_root() {
    chroot "$ROOT" /usr/bin/env -i QEMU_CPU="$CPU" HOME=/root LANG=C.UTF-8 \
        PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin PIP_DISABLE_PIP_VERSION_CHECK=1 \
        PIP_CERT=/etc/ssl/host-ca-bundle.crt SSL_CERT_FILE=/etc/ssl/host-ca-bundle.crt \
        SIGMOID_EDGE_RUNTIME=numpy /bin/sh -c "$1"
}

# 32-bit ARM ELF executables (armhf and armel alike) through qemu-arm.
register_binfmt qemu-arm \
    '\x7f\x45\x4c\x46\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00' \
    '\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff' "$QEMU"
make_root
mount_root
if [ "$SKIP_TESTS" != 1 ] && ! in_root "dpkg -s $TEST_PACKAGES" >/dev/null 2>&1; then
    echo "== apt-get install $TEST_PACKAGES (a root made before the edge tests ran here)"
    in_root "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $TEST_PACKAGES" \
        || die "could not install $TEST_PACKAGES in $ROOT"
fi

echo "== the sources and the smoke models"
rm -rf "$ROOT/smoke"
copy_sources
PYTHONPATH=$REPO "$HOST_PYTHON" "$REPO/deploy/armhf/smoke_models.py" build "$ROOT/smoke" 2>/dev/null
WHEEL=$(build_wheel "$HOST_PYTHON")
[ -n "$WHEEL" ] || die "could not build the sigmoid-edge wheel"
# No onnxruntime on the board, and no onnx: it has no 32-bit ARM wheel on PyPI, and Debian's
# python3-onnx (1.12) cannot write opset 18.
TESTS=$(edge_tests 'onnxruntime|onnx')
echo "edge test subset: $TESTS"
echo "left out (they import the trainer, onnx or onnxruntime): $(EXCLUDED=1 edge_tests 'onnxruntime|onnx')"

[ -e "$RESULTS" ] || printf 'cpu\tarch\tnumpy\tinstall\tsmoke\ttests\tdetail\n' >"$RESULTS"
venv=/venvs/edge
log=$ROOT/verify-$CPU.log
echo "== emulated CPU: $CPU ($(in_root 'uname -m'), $(in_root 'python3 --version'); log: $log)"
install=pass smoke=- tests=- detail=
numpy_version=$(in_root "python3 -c 'import numpy; print(numpy.__version__)'" 2>&1 | tail -n 1)
# --system-site-packages: numpy comes from Debian (pip would build it from source here).
if ! in_root "rm -rf $venv && python3 -m venv --system-site-packages $venv \
        && $venv/bin/pip install -q '/wheel/$WHEEL'" >"$log" 2>&1; then
    install=failed
    detail=$(tail -n 3 "$log" | tr '\t\n' '  ')
else
    if in_root "$venv/bin/python -c 'import onnxruntime'" >>"$log" 2>&1; then
        install="failed (onnxruntime is installed: the marker did not keep it out)"
    fi
    smoke_and_tests "$venv" /src/deploy/armhf/smoke_models.py "$TEST_PIP" "not slow and not fuzz"
fi
printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$CPU" "$ARCH" "$numpy_version" "$install" "$smoke" "$tests" "$detail" | tee -a "$RESULTS"
echo "== results in $RESULTS"
