#!/usr/bin/env bash
# Prepare this machine for spanprobe's demo, or for development and tests.
#
#   scripts/setup.sh --for demo        what scripts/demo.sh needs: bcc, kernel headers,
#                                      tracefs, .venv with the tracer (spanprobe[tracer])
#   scripts/setup.sh [--for test]      everything (the default): also bpftrace and the
#                                      tools the tests use, .venv with spanprobe[dev],
#                                      the SDK matrix venvs on pyenv's Python 3.9-3.13
#   scripts/setup.sh --aarch64         (implies --for test) also the aarch64 emulation
#
# Meant for a fresh Debian 12 machine as root (CI runs it as root with CI=true and
# no stdin). Idempotent: every step checks first and does nothing when the machine
# is already right, so scripts/test.sh and scripts/demo.sh call it on every run.
#
# Derived state it creates (all disposable, all git-ignored):
#   .venv/          Debian's python3 + system site-packages: the only place bcc's
#                   Python module exists (python3-bpfcc; bcc is not on PyPI).
#   .venvs/py3.X/   --for test: plain venvs on pyenv's Pythons for the SDK test matrix.
#   .venvs/aarch64/ with --aarch64 only (scripts/test.sh): an arm64 Python run by
#                   qemu-user, and the cross toolchain, for the aarch64 tests.
set -euo pipefail

WITH_AARCH64=false
PURPOSE=test
SETUP_ARGS="$*"
usage() { printf 'usage: %s [--for demo|test] [--aarch64]\n' "$0" >&2; exit 2; }
while (($#)); do
    case "$1" in
        --aarch64) WITH_AARCH64=true ;;
        --for) (($# >= 2)) || usage; PURPOSE="$2"; shift ;;
        --for=*) PURPOSE="${1#--for=}" ;;
        *) usage ;;
    esac
    shift
done
case "$PURPOSE" in demo|test) ;; *) usage ;; esac
$WITH_AARCH64 && [[ "$PURPOSE" == demo ]] && { printf 'spanprobe setup: --aarch64 is for tests, not --for demo\n' >&2; exit 2; }

# Key everything off the repo, never the caller's cwd.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

SDK_MINORS=(3.9 3.10 3.11 3.12 3.13)
MAIN_VENV="$ROOT/.venv"
MATRIX_DIR="$ROOT/.venvs"
STAMP_NAME=".spanprobe-installed"
IN_CI=false
case "${CI:-}" in true|TRUE|True|1|yes) IN_CI=true ;; esac

export DEBIAN_FRONTEND=noninteractive
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

log()  { printf 'spanprobe setup: %s\n' "$*"; }
warn() { printf 'spanprobe setup: WARNING: %s\n' "$*" >&2; }
die()  { printf 'spanprobe setup: ERROR: %s\n' "$*" >&2; exit 1; }

# Keep successful runs quiet but never swallow a failure: output is kept aside and
# replayed on stderr only when the command fails.
quietly() {
    local out rc=0
    out="$(mktemp)"
    "$@" >"$out" 2>&1 || rc=$?
    if ((rc != 0)); then
        printf 'spanprobe setup: command failed (exit %d): %s\n' "$rc" "$*" >&2
        cat "$out" >&2
    fi
    rm -f "$out"
    return "$rc"
}

# test.sh and demo.sh may run at the same time; two setups racing on the same venv
# would leave it half-built.
exec 9>"$ROOT/.setup.lock"
flock 9

is_root() { [[ "$(id -u)" == 0 ]]; }

# ---------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------
ARCH="$(dpkg --print-architecture)"
# The demo: bcc's Python module, headers to compile against, venv. The tests also run
# bcc's and bpftrace's own tools, readelf (binutils) and openssl (TLS certificates).
APT_PACKAGES=(python3-bpfcc "linux-headers-$ARCH" python3-venv)
[[ "$PURPOSE" == test ]] && APT_PACKAGES+=(bpfcc-tools bpftrace binutils openssl)

# ensure_apt WHAT PACKAGE...: install those of the packages that are not installed yet.
ensure_apt() {
    local what="$1" pkg missing=()
    shift
    for pkg in "$@"; do
        if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]]; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        log "$what already installed"
        return
    fi
    is_root || die "missing Debian packages (${missing[*]}) and not root; run: sudo $0 $SETUP_ARGS"
    log "installing $what: ${missing[*]} ..."
    # Only refresh the index when we actually install: it is slow and needs network.
    quietly apt-get update -q
    quietly apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
}
ensure_apt "apt packages" "${APT_PACKAGES[@]}"

# ---------------------------------------------------------------------------
# 2. Kernel headers for bcc
# ---------------------------------------------------------------------------
# The running kernel ships no headers and no CONFIG_IKHEADERS; bcc compiles
# uprobe/USDT programs fine against Debian's linux-headers (6.1) if the module
# tree points at them. BCC_KERNEL_SOURCE alone does not cope with Debian's split
# arch/common header packages, hence both build and source links.
KREL="$(uname -r)"
MODDIR="/lib/modules/$KREL"
if [[ -d "$MODDIR/build/" ]]; then
    log "kernel headers: $MODDIR/build -> $(readlink -f "$MODDIR/build")"
else
    # Only the generic flavour (X.Y.Z-N-ARCH), not -rt/-cloud; newest version wins.
    hdr_re="^/usr/src/linux-headers-[0-9]+\.[0-9]+\.[0-9]+-[0-9]+-${ARCH}\$"
    candidates=()
    for d in /usr/src/linux-headers-*-"$ARCH"; do
        [[ -d "$d" && "$d" =~ $hdr_re ]] && candidates+=("$d")
    done
    hdr=""
    if ((${#candidates[@]})); then
        hdr="$(printf '%s\n' "${candidates[@]}" | sort -V | tail -n 1)"
    fi
    common="${hdr%-"$ARCH"}-common"
    if [[ -z "$hdr" ]]; then
        warn "no /usr/src/linux-headers-*-$ARCH found; bcc will not be able to compile (BPF tests will fail)"
    elif [[ ! -d "$common" ]]; then
        warn "$hdr has no matching $common; bcc will not be able to compile (BPF tests will fail)"
    elif ! is_root; then
        warn "not root: cannot link $MODDIR/build -> $hdr (BPF tests will fail)"
    else
        log "kernel headers: linking $MODDIR/{build,source} to ${hdr##*/} (running kernel $KREL ships none)"
        mkdir -p "$MODDIR"
        ln -sfn "$hdr" "$MODDIR/build"
        # ln -sfn on a real directory would put the link *inside* it: leave such a
        # source tree alone, it was not made by us.
        if [[ -L "$MODDIR/source" || ! -e "$MODDIR/source" ]]; then
            ln -sfn "$common" "$MODDIR/source"
        else
            warn "$MODDIR/source is a real directory; left as is"
        fi
    fi
fi

# ---------------------------------------------------------------------------
# 3. tracefs (and debugfs)
# ---------------------------------------------------------------------------
is_mounted() { awk -v dir="$1" -v type="$2" '$2 == dir && $3 == type { found = 1 } END { exit !found }' /proc/mounts; }

if is_mounted /sys/kernel/tracing tracefs; then
    log "tracefs already mounted at /sys/kernel/tracing"
else
    log "mounting tracefs at /sys/kernel/tracing ..."
    # Not fatal: SDK-only work needs no tracefs, and the BPF tests name the missing
    # mount precisely (and fail under SPANPROBE_REQUIRE_BPF=1).
    mount -t tracefs nodev /sys/kernel/tracing ||
        warn "could not mount tracefs at /sys/kernel/tracing (BPF tests will fail)"
fi
# Only a convenience for older tools that look under /sys/kernel/debug/tracing.
if ! is_mounted /sys/kernel/debug debugfs; then
    mount -t debugfs nodev /sys/kernel/debug 2>/dev/null || true
fi

# ---------------------------------------------------------------------------
# Virtualenv helpers
# ---------------------------------------------------------------------------
# venv_healthy VENV BASE_PREFIX WANT_SYSTEM_SITE
# A venv counts as broken if its interpreter no longer runs (pyenv version
# removed), was made from another base Python, was moved (sys.prefix differs), or
# has the wrong site-packages visibility.
venv_healthy() {
    local venv="$1" base="$2" system_site="$3"
    [[ -x "$venv/bin/python" && -f "$venv/pyvenv.cfg" ]] || return 1
    "$venv/bin/python" - "$venv" "$base" "$system_site" <<'PY' >/dev/null 2>&1
import os, sys, importlib.util
venv, base, system_site = sys.argv[1:]
real = os.path.realpath
cfg = open(os.path.join(venv, "pyvenv.cfg")).read().replace(" ", "").lower()
ok = (real(sys.prefix) == real(venv)                      # not moved
      and real(sys.base_prefix) == real(base)             # same base interpreter
      and ("include-system-site-packages=true" in cfg) == (system_site == "yes"))
if system_site == "yes":
    # The whole point of .venv: Debian's bcc must be visible.
    ok = ok and importlib.util.find_spec("bcc") is not None
sys.exit(0 if ok else 1)
PY
}

# needs_install VENV [ACCEPTED...]: true when pip must run. The stamp holds what was
# installed (the pip arguments); it is only trusted if it is one of ACCEPTED (when
# given), newer than pyproject.toml, and the editable install points at this checkout.
needs_install() {
    local venv="$1" stamp="$1/$STAMP_NAME" ok=true
    shift
    [[ -f "$stamp" && "$stamp" -nt "$ROOT/pyproject.toml" ]] || return 0
    if (($#)); then
        ok=false
        for accepted in "$@"; do
            [[ "$(cat "$stamp")" == "$accepted" ]] && ok=true
        done
    fi
    $ok || return 0
    ! "$venv/bin/python" - "$ROOT/sdk/spanprobe/__init__.py" <<'PY' >/dev/null 2>&1
import os, sys, importlib.util
spec = importlib.util.find_spec("spanprobe")   # finds, does not execute the SDK
sys.exit(0 if spec and spec.origin and os.path.realpath(spec.origin) == os.path.realpath(sys.argv[1]) else 1)
PY
}

# ensure_venv VENV BASE_PYTHON WANT_SYSTEM_SITE PIP_ARGS...
# (ACCEPT: stamps besides "PIP_ARGS..." that also satisfy it, e.g. a dev install for the demo)
ensure_venv() {
    local venv="$1" python="$2" system_site="$3"
    shift 3
    local accept=("$*" ${ACCEPT[@]+"${ACCEPT[@]}"})
    local base name="${venv#"$ROOT"/}"
    base="$("$python" -c 'import sys; print(sys.base_prefix)')"
    if ! venv_healthy "$venv" "$base" "$system_site"; then
        if [[ -e "$venv" ]]; then
            log "$name: broken or stale, recreating with $python ..."
            rm -rf "$venv"
        else
            log "$name: creating with $python ..."
        fi
        local opts=()
        [[ "$system_site" == yes ]] && opts+=(--system-site-packages)
        quietly "$python" -m venv "${opts[@]}" "$venv"
    fi
    if needs_install "$venv" "${accept[@]}"; then
        log "$name: pip install $* ..."
        rm -f "$venv/$STAMP_NAME"
        # `python -m pip`, not bin/pip: script shebangs break if the tree moves.
        quietly "$venv/bin/python" -m pip install -q "$@"
        printf '%s' "$*" >"$venv/$STAMP_NAME"
    else
        log "$name: up to date"
    fi
}

# ---------------------------------------------------------------------------
# 4. Main venv: Debian's python3 (3.11) with bcc, full dev extras
# ---------------------------------------------------------------------------
# Must be Debian's interpreter, not whatever `python3` is first on PATH (pyenv
# shims): bcc's module lives only in /usr/lib/python3/dist-packages.
[[ -x /usr/bin/python3 ]] || die "/usr/bin/python3 missing (Debian's python3 package)"
ACCEPT=()
if [[ "$PURPOSE" == demo ]]; then
    ACCEPT=("-e .[dev]")  # a test set-up has everything the demo needs
    ensure_venv "$MAIN_VENV" /usr/bin/python3 yes -e ".[tracer]"
    ACCEPT=()
    log "done (--for demo: no test environments; scripts/test.sh sets those up)"
    exit 0
fi
ensure_venv "$MAIN_VENV" /usr/bin/python3 yes -e ".[dev]"

# ---------------------------------------------------------------------------
# 5. SDK matrix venvs: pyenv Pythons 3.9 .. 3.13, no bcc, no system packages
# ---------------------------------------------------------------------------
PYENV_VERSIONS="${PYENV_ROOT:-${HOME:-/root}/.pyenv}/versions"
mkdir -p "$MATRIX_DIR"
missing_minors=()
for minor in "${SDK_MINORS[@]}"; do
    # Exact X.Y.Z only: skips 3.13.0t (free-threaded), 3.12-dev, conda builds...
    re="^${minor//./\\.}\\.[0-9]+\$"
    found=()
    for d in "$PYENV_VERSIONS/$minor".*; do
        [[ "${d##*/}" =~ $re && -x "$d/bin/python$minor" ]] && found+=("${d##*/}")
    done
    if ((${#found[@]} == 0)); then
        missing_minors+=("$minor")
        # A stale venv for a Python that is gone would only fail confusingly later.
        rm -rf "$MATRIX_DIR/py$minor"
        continue
    fi
    newest="$(printf '%s\n' "${found[@]}" | sort -V | tail -n 1)"
    ensure_venv "$MATRIX_DIR/py$minor" "$PYENV_VERSIONS/$newest/bin/python$minor" no \
        -e . pytest hypothesis opentelemetry-api opentelemetry-sdk \
        opentelemetry-proto opentelemetry-exporter-otlp-proto-common opentelemetry-distro  # tests/sdk/otel
done

if ((${#missing_minors[@]})); then
    msg="no pyenv Python ${missing_minors[*]} under $PYENV_VERSIONS"
    if $IN_CI; then
        die "$msg; CI requires every one of ${SDK_MINORS[*]}"
    fi
    warn "$msg; the SDK matrix will skip it"
fi

# ---------------------------------------------------------------------------
# 6. aarch64 under emulation (--aarch64: the tests need it, the demo does not)
# ---------------------------------------------------------------------------
# Debian's arm64 libpython3.11 (Multi-Arch: same, so beside the amd64 one) behind
# a cross-compiled main(), run by qemu-user; the cross compiler and Debian's arm64
# sys/sdt.h for foreign probes. No binfmt registration: the tests start
# qemu-aarch64 themselves, so nothing machine-wide (binfmt_misc) is needed.
if $WITH_AARCH64; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        is_root || die "Debian's arm64 architecture is not enabled and we are not root; run: sudo $0 $SETUP_ARGS"
        dpkg --add-architecture arm64
    fi
    # Multi-Arch: same packages come in one version for both architectures: apt
    # may upgrade the amd64 twins (libpython3.11-stdlib, libssl3...) to match.
    ensure_apt "aarch64 emulation packages" qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
        systemtap-sdt-dev:arm64 libpython3.11:arm64
    A64_DIR="$MATRIX_DIR/aarch64"
    A64_PYTHON="$A64_DIR/bin/python3.11"
    A64_LIBPYTHON=/usr/lib/aarch64-linux-gnu/libpython3.11.so.1.0
    a64_healthy() {
        [[ -x "$A64_PYTHON" && "$A64_PYTHON" -nt "$ROOT/scripts/aarch64-python.c" && "$A64_PYTHON" -nt "$A64_LIBPYTHON" ]] &&
            qemu-aarch64 "$A64_PYTHON" -c 'import ctypes, platform, spanprobe, sys
sys.exit(platform.machine() != "aarch64")' >/dev/null 2>&1
    }
    if a64_healthy; then
        log ".venvs/aarch64: up to date"
    else
        log ".venvs/aarch64: building the arm64 Python ..."
        rm -rf "$A64_DIR"
        site="$A64_DIR/lib/python3.11/site-packages"
        mkdir -p "$A64_DIR/bin" "$site"
        quietly aarch64-linux-gnu-gcc -O2 -o "$A64_PYTHON" "$ROOT/scripts/aarch64-python.c" \
            "$A64_LIBPYTHON" -Wl,-rpath-link,/usr/lib/aarch64-linux-gnu
        # A venv on Debian's stdlib (home), blind to the amd64 dist-packages, with the
        # SDK of this checkout on its path (what `pip install -e .` does for the SDK).
        printf 'home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11\n' >"$A64_DIR/pyvenv.cfg"
        printf '%s\n' "$ROOT/sdk" >"$site/spanprobe-checkout.pth"
        a64_healthy || die ".venvs/aarch64: the arm64 Python does not start under qemu-aarch64"
    fi
fi

log "done"
