"""OpenTelemetry API spans through spanprobe's provider, traced by `spanprobe trace` and exported over OTLP.

The same scenario (tests/support/otel_app.py) runs once in a traced process
with OTEL_PYTHON_TRACER_PROVIDER=spanprobe and once in this process with the
OpenTelemetry SDK; what the receiver gets must be the SDK's spans, field by
field, ids and times aside.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support import otel_app
from tests.support.otlp_receiver import attributes
from tests.support.tracer_helpers import run_spanprobe

pytestmark = pytest.mark.bpf

APP = Path(otel_app.__file__)


def sdk_spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel_app.scenario(provider.get_tracer("otel_app", "1.0", schema_url="https://opentelemetry.io/schemas/1.21.0"))
    request = encode_spans(exporter.get_finished_spans())
    return [(s, ss.scope) for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def shape(span, by_id):
    """A span without its ids and times: what must be the same as the SDK's."""
    parent = by_id.get(span.parent_span_id)
    return {
        "name": span.name, "kind": span.kind, "parent": parent.name if parent is not None else None,
        "attributes": attributes(span.attributes),
        "events": [(e.name, {k: v for k, v in attributes(e.attributes).items() if k != "exception.stacktrace"})
                   for e in span.events],
        "links": [(by_id[k.span_id].name, attributes(k.attributes), k.flags) for k in span.links],
        "status": (span.status.code, span.status.message), "flags": span.flags & 0x300,
        "dropped": (span.dropped_attributes_count, span.dropped_events_count, span.dropped_links_count),
    }


def test_api_spans_exported_as_the_sdk_exports_them(tmp_path, grpc_receiver):
    env = {"OTEL_PYTHON_TRACER_PROVIDER": "spanprobe", "OTEL_SERVICE_NAME": "otel-app"}
    r = run_spanprobe("trace", "--exporter", "otlp", "--otlp-endpoint", grpc_receiver.endpoint, "--",
                      sys.executable, str(APP), env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "lost: 0 " in r.stderr, r.stderr
    ids = json.loads(r.stdout.strip().splitlines()[-1])
    got = grpc_receiver.collector.spans
    expected = sdk_spans()
    assert len(got) == len(expected) == 4
    ours_by_id = {s.span.span_id: s.span for s in got}
    theirs_by_id = {s.span_id: s for s, _ in expected}
    ours = sorted((shape(s.span, ours_by_id) for s in got), key=lambda d: d["name"])
    theirs = sorted((shape(s, theirs_by_id) for s, _ in expected), key=lambda d: d["name"])
    assert ours == theirs
    # one trace, the root's ids as the application saw them, the scope, the application's service name
    assert {s.trace_id for s in got} == {ids["trace_id"]}
    (root,) = [s for s in got if not s.parent_span_id]
    assert root.span_id == ids["span_id"]
    assert {s.scope for s in got} == {"otel_app"}
    assert {s.resource["service.name"] for s in got} == {"otel-app"}
    failed = [s for s in got if s.name == "fails"][0]
    stack = attributes(failed.span.events[0].attributes)["exception.stacktrace"]
    assert stack.startswith("Traceback") and stack.rstrip().endswith("ValueError: bad item")
    for s in got:
        assert s.span.start_time_unix_nano <= s.span.end_time_unix_nano


def test_untraced_app_fires_nothing_and_runs_unchanged(tmp_path):
    """No tracer attached: the same app runs, prints its (valid) ids, and loads no more than the provider."""
    import subprocess

    out = subprocess.run([sys.executable, str(APP)], env={"OTEL_PYTHON_TRACER_PROVIDER": "spanprobe",
                                                         "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ids = json.loads(out.stdout)
    assert int(ids["trace_id"], 16) and int(ids["span_id"], 16)


APP_RESOURCE = r'''
import os
# Set in code, after start: only the providers' schemas can tell the tracer.
os.environ["OTEL_SERVICE_NAME"] = "checkout"
os.environ["OTEL_RESOURCE_ATTRIBUTES"] = "deployment.environment=test,service.name=ignored,process.pid=1"
import spanprobe
from opentelemetry import trace
import spanprobe.otel

p = spanprobe.Provider("shop")

@p.span("handle")
def handle():
    pass

p.load()
trace.set_tracer_provider(spanprobe.otel.TracerProvider())
with trace.get_tracer("app").start_as_current_span("api span"):
    pass
handle()
'''


def test_app_environment_reaches_every_spans_resource(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(APP_RESOURCE)
    out = tmp_path / "spans.jsonl"
    r = run_spanprobe("trace", "--exporter", "jsonl", "--output", str(out), "--", sys.executable, str(script),
                      env={"OTEL_SERVICE_NAME": "from-start", "OTEL_RESOURCE_ATTRIBUTES": ""}, timeout=120)
    assert r.returncode == 0, r.stderr
    spans = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(s["name"] for s in spans) == ["api span", "handle"]
    for s in spans:
        res = s["resource"]
        assert res["service.name"] == "checkout"  # the app's, as it was at load time
        assert res["deployment.environment"] == "test"
        assert res["process.pid"] != 1 and res["process.executable.name"].startswith("python")


APP_ONE_CONTEXT = r'''
import json
import spanprobe
import spanprobe.otel
from opentelemetry import trace

trace.set_tracer_provider(spanprobe.otel.TracerProvider())
tracer = trace.get_tracer("client.lib", "2.0")
p = spanprobe.Provider("shop")

@p.span("handle", kind="server")
def handle():
    try:
        raise LookupError("no such item")
    except LookupError as exc:
        spanprobe.record_exception(exc)
        spanprobe.set_status("error", "item missing")
    with tracer.start_as_current_span("GET", kind=trace.SpanKind.CLIENT):
        headers = {}
        spanprobe.inject(headers)
        return headers

p.load()
spanprobe.otel.tracer.span_probe()        # loaded up front, so the tracer attaches to both from the start
spanprobe.spans.status.exception_event()
with spanprobe.continue_trace({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}):
    print(json.dumps(handle()))
'''


def test_decorator_span_one_context_status_and_exception(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(APP_ONE_CONTEXT)
    out = tmp_path / "spans.jsonl"
    r = run_spanprobe("trace", "--exporter", "jsonl", "--output", str(out), "--string-size", "4096", "--",
                      sys.executable, str(script), timeout=120)
    assert r.returncode == 0, r.stderr
    sent = json.loads(r.stdout.strip().splitlines()[-1])
    spans = {s["name"]: s for s in (json.loads(line) for line in out.read_text().splitlines())}
    handle, get = spans["handle"], spans["GET"]
    assert handle["trace_id"] == get["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert handle["parent_span_id"] == "b7ad6b7169203331"
    assert get["parent_span_id"] == handle["span_id"]  # the OTel span is the decorator span's child
    assert sent["traceparent"] == "00-%s-%s-01" % (get["trace_id"], get["span_id"])
    assert handle["status"] == {"code": "ERROR", "description": "item missing"}
    (exc,) = [e for e in handle["events"] if e["name"] == "exception"]
    assert exc["attributes"]["exception.type"] == "LookupError"
    assert exc["attributes"]["exception.message"] == "no such item"
    assert exc["attributes"]["exception.stacktrace"].rstrip().endswith("LookupError: no such item")
    assert get["scope"] == "client.lib"
