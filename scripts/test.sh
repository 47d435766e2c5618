#!/usr/bin/env bash
# Run spanprobe's tests on every interpreter we support.
#
#   1. the full suite on Debian's python3 (.venv), the only one with bcc: BPF
#      prerequisites are required there (SPANPROBE_REQUIRE_BPF=1), so a machine
#      that cannot trace fails loudly instead of skipping every tracer test;
#   2. the SDK subset (tests/sdk) on each pyenv Python 3.9 .. 3.13 (.venvs/py3.X),
#      which have no bcc, so BPF is *not* required there (SPANPROBE_SDK_MATRIX=1).
#
# Extra arguments go to the main run only: scripts/test.sh -k elf -x
# Exit status is non-zero if any run failed; "no tests collected" is a failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT" || exit 1

SDK_MINORS=(3.9 3.10 3.11 3.12 3.13)

# --aarch64: qemu-user, an arm64 Python and the cross toolchain for the aarch64 tests.
bash "$ROOT/scripts/setup.sh" --for test --aarch64 || { echo "spanprobe test: setup failed" >&2; exit 1; }

export SPANPROBE_REQUIRE_BPF="${SPANPROBE_REQUIRE_BPF:-1}"

summary=()
n_pass=0
n_fail=0

# run LABEL CMD...: one interpreter run, recorded for the summary.
run() {
    local label="$1" rc=0
    shift
    printf '\n=== spanprobe test: %s ===\n' "$label"
    "$@" || rc=$?
    case "$rc" in
        0) summary+=("PASS  $label"); n_pass=$((n_pass + 1)) ;;
        # pytest's "no tests collected": a green run that tested nothing is a lie.
        5) summary+=("FAIL  $label (no tests collected)"); n_fail=$((n_fail + 1)) ;;
        *) summary+=("FAIL  $label (pytest exit $rc)"); n_fail=$((n_fail + 1)) ;;
    esac
}

run "py3.11 Debian .venv, full suite with bcc" \
    "$ROOT/.venv/bin/python" -m pytest tests -q "$@"

for minor in "${SDK_MINORS[@]}"; do
    py="$ROOT/.venvs/py$minor/bin/python"
    if [[ ! -x "$py" ]]; then
        # setup.sh already failed in CI for a missing version; locally it warned.
        summary+=("SKIP  py$minor SDK subset (no pyenv Python $minor)")
        continue
    fi
    # env -u: a REQUIRE_BPF inherited from CI must not turn bcc-less runs red.
    run "py$minor .venvs/py$minor, SDK subset" \
        env -u SPANPROBE_REQUIRE_BPF SPANPROBE_SDK_MATRIX=1 \
        "$py" -m pytest tests/sdk -q -p no:cacheprovider
done

printf '\nspanprobe test summary:\n'
printf '  %s\n' "${summary[@]}"
echo "$n_pass passed, $n_fail failed"
((n_fail == 0))
