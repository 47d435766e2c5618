#!/usr/bin/env bash
# Run the spanprobe demo, setting up first: `spanprobe demo` starts the probed
# simple HTTP server (python -m demo_apps.simplehttp), traces it with eBPF,
# downloads a few files from it and prints the resulting traces as trees.
# Arguments go to `spanprobe demo` (--help lists them; --otlp-endpoint URL also
# sends the spans to an OpenTelemetry collector).
#
# The seed article's original example (its patched http.server traced by its
# own bcc script) is still there: .venv/bin/python -m demo_apps.seed
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"

# Setup chatter goes to stderr so the demo's own stdout (the traces) stays pipeable.
# --for demo: only what the demo uses (no test virtualenvs, no test tools).
bash "$ROOT/scripts/setup.sh" --for demo >&2

# .venv: the tracer needs Debian's bcc, which only that venv can see.
exec "$ROOT/.venv/bin/spanprobe" demo "$@"
