#!/usr/bin/env bash
# Run the spanprobe demo (traced demo app -> OpenTelemetry spans), setting up first.
# Arguments go to `spanprobe demo`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"

# Setup chatter goes to stderr so the demo's own stdout stays pipeable.
bash "$ROOT/scripts/setup.sh" >&2

# .venv: the tracer needs Debian's bcc, which only that venv can see.
exec "$ROOT/.venv/bin/spanprobe" demo "$@"
