#!/usr/bin/env bash
# Verify onnxruntime versions on a Raspberry Pi 4 CPU (Cortex-A72) without a Raspberry Pi.
#
# Builds a Debian arm64 root with debootstrap, runs it under qemu user-mode emulation of a
# Cortex-A72 (QEMU_CPU=cortex-a72, through binfmt_misc), and for each onnxruntime version:
#   1. creates a venv with ONLY the edge install (the repo's wheel, as install-pi.sh does)
#      plus that onnxruntime, and runs a smoke inference (a float and an int8 model built on
#      this machine; the results must match this machine's onnxruntime);
#   2. adds the test tools and runs the edge test subset (test files that do not import
#      scikit-learn, without the `slow` ones) against a mosquitto inside the root.
# A result line per version goes to stdout and to $RESULTS (TSV).
#
# Usage (as root, on an amd64 Debian/Ubuntu host; slow: several minutes per version):
#   sudo deploy/arm64/verify-onnxruntime.sh 1.20.1 1.21.0 1.27.0 1.28.0
# Environment:
#   ROOT=/var/tmp/sigmoid-edge-arm64   where the arm64 root lives (reused across runs)
#   SUITE=bookworm  MIRROR=<debian mirror URL> (debootstrap's default when empty)
#   CPU=cortex-a72                     the emulated CPU: cortex-a72 (Pi 4) or cortex-a76 (Pi 5)
#   CPU_FILES=pi                       /proc/cpuinfo + /sys/devices/system/cpu of that Pi;
#                                      host: the x86 host's (what a plain chroot shows)
#   HOST_PYTHON=.venv/bin/python       a Python with onnx + onnxruntime, to build the models
#   RESULTS=$ROOT/results.tsv  SKIP_TESTS=1 (smoke inference only)
#   EDGE_TESTS="tests/test_a.py ..."   the test files to run (default: see above)
#   TIME_MODELS=DIR                    also time DIR/*.int8.onnx on the emulated CPU with
#                                      deploy/arm64/time_models.py (bench_pipeline.py
#                                      --save-models writes them); compare with the same
#                                      script on the host: only ratios carry over
# Not part of `make test`: it needs root, binfmt_misc and a lot of time.
set -euo pipefail

die() { echo "verify-onnxruntime: $*" >&2; exit 1; }

REPO=$(cd "$(dirname "$0")/../.." && pwd)
ROOT=${ROOT:-/var/tmp/sigmoid-edge-arm64}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-}
CPU=${CPU:-cortex-a72}
CPU_FILES=${CPU_FILES:-pi}
RESULTS=${RESULTS:-$ROOT/results.tsv}
SKIP_TESTS=${SKIP_TESTS:-0}
if [ -z "${HOST_PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then HOST_PYTHON=$REPO/.venv/bin/python; else HOST_PYTHON=python3; fi
fi
[ "$#" -gt 0 ] || set -- 1.20.1 1.21.0 1.27.0 1.28.0

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and binfmt_misc need it)"
[ "$(uname -m)" = x86_64 ] || [ "$(uname -m)" = aarch64 ] || die "needs an x86_64 or aarch64 host"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install -y debootstrap"
QEMU=$(command -v qemu-aarch64-static || true)
[ -n "$QEMU" ] || die "qemu-aarch64-static is missing: apt-get install -y qemu-user-static"
"$HOST_PYTHON" -c 'import onnx, onnxruntime' 2>/dev/null \
    || die "$HOST_PYTHON lacks onnx/onnxruntime (run 'make test' once, or set HOST_PYTHON)"

# shellcheck source=SCRIPTDIR/../lib/emulated-root.sh
. "$REPO/deploy/lib/emulated-root.sh"

# binfmt_misc runs every arm64 program in the root (pip's subprocesses too) through qemu.
register_arm64() {
    [ "$(uname -m)" = aarch64 ] && return 0
    register_binfmt qemu-aarch64 \
        '\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00' \
        '\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff' "$QEMU"
}

# /proc/cpuinfo and /sys/devices/system/cpu of a Raspberry Pi 4 (Cortex-A72 r0p3)
# or Pi 5 (Cortex-A76 r4p1), as their 64-bit kernels show them.
write_cpu_files() {
    local dir=$1 part features revision variant midr i
    case "$CPU" in
        cortex-a72) part=0xd08 variant=0x0 revision=3 midr=0x00000000410fd083
            features="fp asimd evtstrm crc32 cpuid" ;;
        cortex-a76) part=0xd0b variant=0x4 revision=1 midr=0x00000000414fd0b1
            features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
        *) die "no CPU files for CPU=$CPU: use cortex-a72, cortex-a76 or CPU_FILES=host" ;;
    esac
    # A Pi has 4 cores; show no more than the host has, or onnxruntime's thread pool would
    # pin threads to cores that do not exist (pthread_setaffinity_np: Invalid argument).
    local cores last
    cores=$(nproc)
    [ "$cores" -le 4 ] || cores=4
    last=$((cores - 1))
    rm -rf "$dir"
    mkdir -p "$dir/sys/devices/system/cpu"
    : >"$dir/cpuinfo"
    for i in $(seq 0 "$last"); do
        printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
            "$i" "$features" "$variant" "$part" "$revision" >>"$dir/cpuinfo"
        mkdir -p "$dir/sys/devices/system/cpu/cpu$i/regs/identification" "$dir/sys/devices/system/cpu/cpu$i/topology"
        echo "$midr" >"$dir/sys/devices/system/cpu/cpu$i/regs/identification/midr_el1"
        echo 0 >"$dir/sys/devices/system/cpu/cpu$i/topology/physical_package_id"
        echo "$i" >"$dir/sys/devices/system/cpu/cpu$i/topology/core_id"
    done
    printf 'Hardware\t: BCM2835\nModel\t\t: Raspberry Pi (emulated %s)\n' "$CPU" >>"$dir/cpuinfo"
    for f in possible present online; do echo "0-$last" >"$dir/sys/devices/system/cpu/$f"; done
}

mount_into_root() {
    mount_root
    # onnxruntime's cpuinfo library reads /proc/cpuinfo and /sys/devices/system/cpu. qemu
    # user mode emulates the instructions (and AT_HWCAP) of $CPU, but these files would be
    # the x86 host's: 1.20.1 aborts without /sys, 1.28.0 segfaults parsing the host's files.
    # So the root gets the files a Raspberry Pi with that CPU has (CPU_FILES=host: the host's).
    if [ "$CPU_FILES" = host ]; then
        mountpoint -q "$ROOT/sys" || { mount -t sysfs sysfs "$ROOT/sys"; MOUNTED+=("$ROOT/sys"); }
    else
        write_cpu_files "$ROOT/.cpu-files"
        mount --bind "$ROOT/.cpu-files/cpuinfo" "$ROOT/proc/cpuinfo"
        MOUNTED+=("$ROOT/proc/cpuinfo")
        mount --bind "$ROOT/.cpu-files/sys" "$ROOT/sys"
        MOUNTED+=("$ROOT/sys")
    fi
}

make_root() {
    if [ -e "$ROOT/.sigmoid-edge-root-ok" ]; then return 0; fi
    echo "== debootstrap $SUITE arm64 into $ROOT (10-20 minutes under emulation)"
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    # shellcheck disable=SC2086  # MIRROR is empty (debootstrap's default) or one URL
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,ca-certificates,mosquitto,mosquitto-clients \
        "$SUITE" "$ROOT" $MIRROR
    touch "$ROOT/.sigmoid-edge-root-ok"
}

# Run a shell command inside the root as the emulated Cortex-A72, with a clean environment.
in_root() {
    chroot "$ROOT" /usr/bin/env -i QEMU_CPU="$CPU" HOME=/root LANG=C.UTF-8 \
        PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin PIP_DISABLE_PIP_VERSION_CHECK=1 \
        PIP_CERT=/etc/ssl/host-ca-bundle.crt SSL_CERT_FILE=/etc/ssl/host-ca-bundle.crt \
        /bin/sh -c "$1"
}

register_arm64
make_root
mount_into_root

echo "== the sources and the smoke models"
rm -rf "$ROOT/smoke"
copy_sources
PYTHONPATH=$REPO "$HOST_PYTHON" "$REPO/deploy/arm64/smoke_model.py" build "$ROOT/smoke" 2>/dev/null
# The wheel is pure Python: build it here once, install the same file on the emulated Pi.
WHEEL=$(build_wheel "$HOST_PYTHON")
[ -n "$WHEEL" ] || die "could not build the sigmoid-edge wheel"
# The core dependencies other than onnxruntime, to install a version pyproject excludes.
OTHER_DEPS=$("$HOST_PYTHON" - "$ROOT/wheel/$WHEEL" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as whl:
    meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    lines = whl.read(meta).decode().splitlines()
deps = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
extras = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Provides-Extra:")]
wanted = [d.split(";")[0].strip() for d in deps
          if "extra ==" not in d or ("signing" in extras and "extra == \"signing\"" in d)]
print(" ".join(f"'{d}'" for d in wanted if not d.startswith("onnxruntime")))
PY
)
# The edge install is the wheel plus its `signing` extra when it has one (as install-pi.sh).
if "$HOST_PYTHON" -c 'import sys, zipfile
whl = zipfile.ZipFile(sys.argv[1])
meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
sys.exit("Provides-Extra: signing" not in whl.read(meta).decode())' "$ROOT/wheel/$WHEEL"; then
    EDGE_SPEC="/wheel/${WHEEL}[signing]"
else
    EDGE_SPEC="/wheel/$WHEEL"
fi
TESTS=$(edge_tests "")
echo "edge test subset: $TESTS"

[ -e "$RESULTS" ] || printf 'onnxruntime\tcpu\tcpu files\tinstall\tsmoke\ttests\tdetail\n' >"$RESULTS"
echo "== emulated CPU: $CPU ($(in_root 'uname -m'), $(in_root 'python3 --version'))"
for version in "$@"; do
    venv=/venvs/ort-$version
    log=$ROOT/ort-$version.log
    echo "== onnxruntime $version (log: $log)"
    install=pass smoke=- tests=- detail=
    in_root "rm -rf $venv && python3 -m venv $venv" >"$log" 2>&1
    if ! in_root "$venv/bin/pip install -q '$EDGE_SPEC' 'onnxruntime==$version'" >>"$log" 2>&1; then
        # pyproject excludes this version (e.g. 1.21.0): install it beside the wheel anyway.
        install=failed
        if grep -q ResolutionImpossible "$log" && in_root "$venv/bin/pip install -q \
                'onnxruntime==$version' $OTHER_DEPS && $venv/bin/pip install -q --no-deps \
                '$EDGE_SPEC'" >>"$log" 2>&1; then
            install="pass (excluded by pyproject, installed with --no-deps)"
        fi
    fi
    if [ "$install" = failed ]; then
        detail=$(tail -n 3 "$log" | tr '\t\n' '  ')
    else
        # The edge install must not pull the trainer's dependencies.
        if in_root "$venv/bin/python -c 'import onnx'" >>"$log" 2>&1; then
            install="failed (onnx is installed: the edge install pulls the trainer)"
        fi
        # The test tools the subset imports (aarch64 has wheels for all of them); onnx for
        # the tests that build models with it.
        smoke_and_tests "$venv" /src/deploy/arm64/smoke_model.py \
            "onnx tqdm cbor2 protobuf jinja2 cryptography" "not slow"
        if [ -n "${TIME_MODELS:-}" ]; then
            rm -rf "$ROOT/time-models" && cp -r "$TIME_MODELS" "$ROOT/time-models"
            echo "== batch-1 CPU us on the emulated $CPU (onnxruntime $version)"
            in_root "$venv/bin/python /src/deploy/arm64/time_models.py /time-models 20" \
                | tee "$ROOT/time-models-$version.tsv"
        fi
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$version" "$CPU" "$CPU_FILES" "$install" "$smoke" "$tests" "$detail" | tee -a "$RESULTS"
done
echo "== results in $RESULTS"
