"""A Flask app under opentelemetry-instrument in SPANPROBE_OTEL_INSTRUMENT's traced mode, a tracer's
arrival and departure played by raising and lowering the otel_span probe's semaphore by hand
(no BPF). Prints one JSON line per step: what the application saw (tests/sdk/otel/test_ondemand.py).
"""

import json
import os
import sqlite3
import sys
import threading
from sqlite3 import connect  # by name, at import: as the driver's own or switched

import flask
import requests
from flask import Flask
from opentelemetry import context, trace
from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, suppress_instrumentation

from spanprobe.otel import ondemand
from spanprobe.otel.tracer import span_probe

app = Flask("ondemand_app")
#: A connection opened at start-up, before any tracer: as a pool's would be.
STARTUP_DB = sqlite3.connect(":memory:")
probe = span_probe()
#: Whether the OpenTelemetry context was empty again once the last request's teardown functions ran
#: (the test client runs a request in a context of its own, so it is looked at from inside), or holds
#: no more than an untraced request's suppress_instrumentation.
after_teardown = []
with suppress_instrumentation():
    SUPPRESSED = dict(context.get_current())


@flask.request_tearing_down.connect_via(app)
def torn_down(sender, **extra):
    after_teardown.append(dict(context.get_current()) in ({}, SUPPRESSED))


def wait_traced(want: bool) -> None:
    with ondemand.active.changed:
        assert ondemand.active.changed.wait_for(lambda: ondemand.active.traced is want, timeout=10)


def cursor_kind(db) -> str:
    """The classes of a cursor of ``db`` that ran a query, proxy by proxy: the instrumentation's
    ("TracedCursorProxy>Cursor") or the driver's ("Cursor")."""
    cursor = db.cursor()
    cursor.execute("SELECT 1")
    kinds = [type(cursor).__name__]
    while hasattr(cursor, "__wrapped__"):
        cursor = cursor.__wrapped__
        kinds.append(type(cursor).__name__)
    return ">".join(kinds)


def seen() -> dict:
    span = trace.get_current_span()
    with sqlite3.connect(":memory:") as db:  # a connection per request
        request_cursor = cursor_kind(db)
    early = connect(":memory:")
    try:
        early_cursor = cursor_kind(early)
    finally:
        early.close()
    return {"recording": span.is_recording(), "kind": getattr(span, "kind", None) and span.kind.name,
            "cursors": [request_cursor, cursor_kind(STARTUP_DB), early_cursor],
            "send_wrapped": hasattr(requests.Session.send, "__wrapped__"),
            "suppressed": not is_instrumentation_enabled()}


@app.route("/")
def index():
    return seen()


@app.route("/leave")
def leave():
    """The tracer leaves while this request runs."""
    before = seen()
    probe.enabled.value = 0
    wait_traced(False)
    return {"before": before, "after": seen()}


@app.route("/arrive")
def arrive():
    """A tracer arrives while this request runs."""
    probe.enabled.value = 1
    wait_traced(True)
    return seen()


def step(name: str, response) -> None:
    print(json.dumps({"step": name, "status": response.status_code, "seen": response.json,
                      "context_after": after_teardown.pop(),
                      "switch": type(app.wsgi_app).__name__,
                      "threads": sorted(t.name for t in threading.enumerate())}), flush=True)


def main() -> int:
    client = app.test_client()
    step("untraced", client.get("/"))
    if ondemand.active is None:  # the mode refused: nothing follows the semaphore
        return 0
    step("arrives during a request", client.get("/arrive"))
    step("traced", client.get("/"))
    step("leaves during a request", client.get("/leave"))
    step("left", client.get("/"))
    probe.enabled.value = 1
    wait_traced(True)
    step("traced again", client.get("/"))
    probe.enabled.value = 0
    wait_traced(False)
    pid = os.fork()  # a pre-forking server's worker: its own semaphore, its own polling thread
    if pid == 0:
        probe.enabled.value = 1
        wait_traced(True)
        step("forked child traced", client.get("/"))
        sys.stdout.flush()
        os._exit(0)
    os.waitpid(pid, 0)
    step("parent after the fork", client.get("/"))
    probe.enabled.value = 1
    wait_traced(True)
    SQLite3Instrumentor().instrument()  # the application's own, on top of opentelemetry-instrument's
    step("instrumented by the application too", client.get("/"))
    SQLite3Instrumentor().uninstrument()
    step("uninstrumented by the application", client.get("/"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
