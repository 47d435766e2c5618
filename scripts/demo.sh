#!/usr/bin/env bash
# Run the spanprobe demo, setting up first: the seed article's http.server,
# patched with spanprobe's stapsdt module, traced by the article's bcc script
# while a few files are downloaded. (Becomes `spanprobe demo` once the
# OpenTelemetry tracer lands, issue 6.)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"

# Setup chatter goes to stderr so the demo's own stdout stays pipeable.
bash "$ROOT/scripts/setup.sh" >&2

cd "$ROOT"
# .venv: the tracer side needs Debian's bcc, which only that venv can see.
exec "$ROOT/.venv/bin/python" -m demo_apps.seed "$@"
