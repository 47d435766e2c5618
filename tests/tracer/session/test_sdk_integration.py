"""The tracer against the SDK's public API: decorators, blocks, events, asyncio, OpenTelemetry context.

The application below only uses what an application would (Provider.span,
span_block, event); the tracer needs no configuration. Traced with
`-- COMMAND`, so attachment happens when the provider loads and every span
is seen.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.support.tracer_helpers import run_spanprobe

pytestmark = pytest.mark.bpf

APP = r'''
import asyncio, json, sys
import spanprobe

p = spanprobe.Provider("orders")
note = p.event("order.note", text=str)
db = p.span_block("db.query", kind="client", attributes={"db.query.text": str},
                  end_attributes={"db.rows": "u32"})

@p.span(attributes=True)
async def reserve(item: int):
    await asyncio.sleep(0.001)

@p.span("checkout", kind="server", attributes={"user": ("user.id", "i64")}, record_return=("order.total", "f64"))
async def checkout(user):
    await reserve(user * 10)
    note.fire("reserved %d" % user)
    with db("SELECT 1") as q:
        q.set_end(3)
    return user + 0.5

@p.span
def fails():
    raise KeyError("missing")

p.load()

async def main():
    await asyncio.gather(*(checkout(u) for u in range(50)))

asyncio.run(main())
try:
    fails()
except KeyError:
    pass
'''

APP_OTEL = r'''
import json
import spanprobe
p = spanprobe.Provider("joined")

@p.span("inner")
def inner():
    pass

p.load()
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
trace.set_tracer_provider(TracerProvider())
with trace.get_tracer("app").start_as_current_span("app.request") as outer:
    inner()
    ctx = outer.get_span_context()
print(json.dumps({"trace_id": "%032x" % ctx.trace_id, "span_id": "%016x" % ctx.span_id}))
'''


def run_app(tmp_path, source):
    script = tmp_path / "app.py"
    script.write_text(source)
    out = tmp_path / "spans.jsonl"
    r = run_spanprobe("trace", "--exporter", "jsonl", "--output", str(out), "--", sys.executable, str(script),
                      timeout=120)
    assert r.returncode == 0, r.stderr
    spans = [json.loads(line) for line in out.read_text().splitlines()]
    return r, spans


def test_asyncio_spans_nest_and_events_join(tmp_path):
    r, spans = run_app(tmp_path, APP)
    assert "lost: 0 " in r.stderr
    checkouts = [s for s in spans if s["name"] == "checkout"]
    assert len(checkouts) == 50
    assert len({s["trace_id"] for s in checkouts}) == 50  # 50 concurrent tasks, 50 traces
    for c in checkouts:
        assert c["parent_span_id"] is None and c["kind"] == "SERVER"
        user = c["attributes"]["user.id"]
        assert c["attributes"]["order.total"] == user + 0.5
        assert c["attributes"]["code.function.name"].endswith("checkout")
        assert [e["name"] for e in c["events"]] == ["order.note"]
        assert c["events"][0]["attributes"] == {"text": "reserved %d" % user}
        children = [s for s in spans if s["parent_span_id"] == c["span_id"]]
        assert sorted(s["name"] for s in children) == ["db.query", "reserve"]
        for child in children:
            assert child["trace_id"] == c["trace_id"]
            assert c["start_time_unix_nano"] <= child["start_time_unix_nano"] <= child["end_time_unix_nano"] \
                <= c["end_time_unix_nano"]
        reserve = next(s for s in children if s["name"] == "reserve")
        assert reserve["attributes"]["item"] == user * 10
        query = next(s for s in children if s["name"] == "db.query")
        assert query["attributes"]["db.query.text"] == "SELECT 1" and query["attributes"]["db.rows"] == 3
    (failed,) = [s for s in spans if s["name"].endswith("fails")]
    assert failed["status"]["code"] == "ERROR" and failed["attributes"]["error.type"] == "KeyError"
    assert failed["events"][0]["name"] == "exception"


def test_probe_span_joins_the_applications_opentelemetry_trace(tmp_path):
    r, spans = run_app(tmp_path, APP_OTEL)
    outer = json.loads(r.stdout.strip().splitlines()[-1])
    (inner,) = [s for s in spans if s["name"] == "inner"]
    assert inner["trace_id"] == outer["trace_id"]
    assert inner["parent_span_id"] == outer["span_id"]
