# shellcheck shell=bash
# Shared by deploy/arm64/verify-onnxruntime.sh and deploy/armhf/verify.sh: a Debian root of
# another architecture run under qemu user-mode emulation, with the edge sources, a wheel
# and the edge test subset. Source it after setting REPO and ROOT; it sets a trap that
# unmounts what mount_root mounted.

MOUNTED=()
cleanup_mounts() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTED[$i]}" 2>/dev/null || true; done
}
trap cleanup_mounts EXIT

# register_binfmt NAME MAGIC MASK QEMU: run NAME binaries through QEMU; the F flag opens the
# interpreter now, so the root does not need a copy of it.
register_binfmt() {
    local name=$1 magic=$2 mask=$3 qemu=$4
    [ -e /proc/sys/fs/binfmt_misc/register ] \
        || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
        || die "cannot mount binfmt_misc (a container without CAP_SYS_ADMIN?)"
    [ -e "/proc/sys/fs/binfmt_misc/$name" ] && return 0
    echo ":$name:M::$magic:$mask:$qemu:F" >/proc/sys/fs/binfmt_misc/register \
        || die "cannot register $name with binfmt_misc"
}

# /proc and /dev in the root, and the host's resolver and CA bundle for pip.
mount_root() {
    mountpoint -q "$ROOT/proc" || { mount -t proc proc "$ROOT/proc"; MOUNTED+=("$ROOT/proc"); }
    mountpoint -q "$ROOT/dev" || { mount --bind /dev "$ROOT/dev"; MOUNTED+=("$ROOT/dev"); }
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
    # pip in the root trusts what pip on the host trusts (e.g. a site's own CA).
    cp -L "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$ROOT/etc/ssl/host-ca-bundle.crt"
}

# The working tree as it is (tracked and new files, without .venv and caches) into $ROOT/src.
copy_sources() {
    rm -rf "$ROOT/src"
    mkdir -p "$ROOT/src"
    if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$REPO" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -C "$ROOT/src" -xf -
    else
        tar -C "$REPO" --exclude=.venv --exclude=.git -cf - . | tar -C "$ROOT/src" -xf -
    fi
}

# build_wheel PYTHON: the pure-Python wheel of $ROOT/src, built on the host once, into
# $ROOT/wheel; prints its file name.
build_wheel() {
    rm -rf "$ROOT/wheel" && mkdir -p "$ROOT/wheel"
    "$1" -m pip wheel --quiet --no-deps -w "$ROOT/wheel" "$ROOT/src" 2>&1 | grep -v '^WARNING: Location' >&2 || true
    (cd "$ROOT/wheel" && ls sigmoid_edge-*.whl)
}

# needs_of FILE MODULES: the top-level imports in FILE, and in the tests/ modules it imports
# at top level, of a module in MODULES (a regex alternative). Indented imports (in a test, or
# a try/except with a fallback such as tests/models.py's) are the file's own business: such
# a test skips itself with pytest.importorskip where the module is missing.
needs_of() {
    local file=$1 modules=$2 helper
    # (No `grep -q` in a pipe: under pipefail its early exit would fail the pipe.)
    # trainer.graph_names needs only numpy: tests/onnx_writer.py builds models with it.
    grep -E "^(from|import) ($modules)([. ,]|$)" "$file" \
        | grep -v -E '^from trainer\.graph_names import' || true
    # `from tests.x import ...` and `from tests import x, y`: one name a line
    while read -r helper; do
        [ -e "$REPO/tests/$helper.py" ] && needs_of "$REPO/tests/$helper.py" "$modules"
    done < <(sed -n -E -e 's/^from tests\.([a-z_0-9]+) import.*/\1/p' \
                       -e 's/^from tests import ([a-z_0-9, ]+).*/\1/p' "$file" | tr -c 'a-z_0-9' '\n')
    return 0
}

# edge_tests [MODULES]: test files that need (at top level) neither scikit-learn, the trainer
# nor any of MODULES (a regex alternative of modules the board lacks, e.g. onnxruntime|onnx);
# test_deploy.py checks this machine's deploy tools, not the board's. EDGE_TESTS overrides
# the list. With EXCLUDED=1 it prints the files it leaves out instead.
edge_tests() {
    if [ -n "${EDGE_TESTS:-}" ] && [ "${EXCLUDED:-0}" != 1 ]; then echo "$EDGE_TESTS"; return 0; fi
    local f needs modules="sklearn|trainer${1:+|$1}"
    for f in "$REPO"/tests/test_*.py; do
        [ "${f##*/}" = test_deploy.py ] && continue
        needs=$(needs_of "$f" "$modules")
        if [ -z "$needs" ] && [ "${EXCLUDED:-0}" != 1 ]; then printf '%s ' "tests/${f##*/}"; fi
        if [ -n "$needs" ] && [ "${EXCLUDED:-0}" = 1 ]; then printf '%s ' "tests/${f##*/}"; fi
    done
    return 0
}

describe_status() {
    case "$1" in
        0) echo pass ;;
        132) echo "SIGILL (illegal instruction)" ;;
        134) echo "SIGABRT" ;;
        135) echo "SIGBUS" ;;
        139) echo "SIGSEGV" ;;
        124) echo "timeout" ;;
        *) echo "failed (exit $1)" ;;
    esac
}

# smoke_and_tests VENV SMOKE_SCRIPT EXTRA_PACKAGES MARKS: run `SMOKE_SCRIPT check /smoke` in
# the root's VENV, then (unless SKIP_TESTS=1 or the smoke failed) the edge test subset
# $TESTS with pytest -m MARKS, after installing the test tools and EXTRA_PACKAGES. Appends
# to $log (in_root is the caller's); sets smoke, tests and detail for the result line.
smoke_and_tests() {
    local venv=$1 script=$2 extra=$3 marks=$4 status summary
    # shellcheck disable=SC2154,SC2153  # log and TESTS are the caller's
    local out=$log tests_to_run=$TESTS
    set +e
    in_root "cd /tmp && timeout 1800 $venv/bin/python $script check /smoke" >>"$out" 2>&1
    status=$?
    set -e
    # shellcheck disable=SC2034  # read by the caller
    smoke=$(describe_status "$status")
    # shellcheck disable=SC2034
    detail=$(grep '^{' "$out" | tail -n 1 || true)
    if [ "${SKIP_TESTS:-0}" != 1 ] && [ "$status" = 0 ]; then
        set +e
        in_root "$venv/bin/pip install -q --prefer-binary pytest pytest-timeout hypothesis $extra \
            && cd /src && PATH=$venv/bin:/usr/sbin:\$PATH timeout 5400 $venv/bin/python -m pytest -q \
               -p no:cacheprovider -m '$marks' --timeout 900 $tests_to_run" >>"$out" 2>&1
        status=$?
        set -e
        summary=$(grep -E '[0-9]+ (passed|failed)' "$out" | tail -n 1 | tr -d '=' | xargs || true)
        # shellcheck disable=SC2034
        tests="$(describe_status "$status"): $summary"
    fi
}
