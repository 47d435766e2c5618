"""Console trees, JSON lines, OTLP settings, and the export pipeline's accounting (no BPF)."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode

from spanprobe_tracer.assemble import Span
from spanprobe_tracer.assemble.telemetry import LogEvent
from spanprobe_tracer.errors import EndpointUnreachable, TracerError
from spanprobe_tracer.export import ConsoleExporter, ExportPipeline, JsonLinesExporter
from spanprobe_tracer.export.otlp.client import check_reachable
from spanprobe_tracer.export.otlp.grpc_client import GrpcClient
from spanprobe_tracer.export.otlp.http_client import HttpClient
from spanprobe_tracer.export.otlp.settings import Flags, resolve
from spanprobe_tracer.export.otlp.span_exporter import OtlpSpanExporter
from spanprobe_tracer.session import Stats
from spanprobe_tracer.text import format_duration, safe_text

RES = Resource({"service.name": "shop", "process.pid": 42})
T0 = 1_700_000_000_000_000_000


def mkspan(name, span_id, parent=None, start=0, end=1_000_000, trace_id=0xAB, attrs=None, events=(),
           status=Status(StatusCode.UNSET), kind=SpanKind.INTERNAL, resource=RES):
    return Span(name, trace_id, span_id, parent or 0, 1, kind, T0 + start, T0 + end, attrs or {}, list(events),
                status, resource, InstrumentationScope("shop"))


# --- console ----------------------------------------------------------------------------

def test_safe_text_escapes_control_characters():
    assert safe_text("plain é ✓") == "plain é ✓"
    assert safe_text("a\x1b[31mb\nc\r\td\\") == "a\\x1b[31mb\\nc\\r\\td\\\\"
    assert safe_text("\u2028\u202e") == "\\u2028\\u202e"
    assert safe_text("x" * 10, limit=4) == "xxxx…"


def test_durations():
    assert format_duration(999) == "999 ns"
    assert format_duration(1_500) == "1.5 µs"
    assert format_duration(2_500_000) == "2.50 ms"
    assert format_duration(3_000_000_000) == "3.000 s"


def test_console_prints_a_tree_when_the_root_ends():
    out = io.StringIO()
    con = ConsoleExporter(out)
    child = mkspan("db.query", 2, parent=1, start=100_000, end=400_000, attrs={"db.text": "SELECT\x1b[2J"},
                   status=Status(StatusCode.ERROR, "Timeout: slow"), kind=SpanKind.CLIENT,
                   events=[Event("cache.miss", {"k": 1}, T0 + 200_000)])
    con.export([child])
    assert out.getvalue() == ""  # held until the root arrives
    con.export([mkspan("GET /x", 1, kind=SpanKind.SERVER, attrs={"http.route": "/x", "code.function.name": "f"})])
    text = out.getvalue()
    assert text.splitlines() == [
        "trace 000000000000000000000000000000ab  shop pid 42",
        "└─ GET /x [server] 1.00 ms  http.route=\"/x\"",
        "   └─ db.query [client] 300.0 µs  ERROR Timeout: slow  db.text=\"SELECT\\x1b[2J\"",
        "      └─ • cache.miss +100.0 µs  k=1",
    ]


def test_console_prints_partial_traces_after_holding():
    out = io.StringIO()
    con = ConsoleExporter(out, hold_s=0.0)
    con.export([mkspan("child", 2, parent=99)])  # the parent is the application's own span
    con.tick()
    assert "joins parent span 0000000000000063" in out.getvalue()
    assert "└─ child" in out.getvalue()


def test_console_flushes_held_traces_at_shutdown():
    out = io.StringIO()
    con = ConsoleExporter(out, hold_s=60)
    con.export([mkspan("child", 2, parent=99)])
    con.shutdown()
    assert "child" in out.getvalue()


def test_console_prints_a_line_per_event_at_once():
    out = io.StringIO()
    con = ConsoleExporter(out)
    con.export_events(events(1, ids=True) + [LogEvent("a\x1b[2Jb", T0, 0, 0, 0, {"event.name": "x", "s": "q\n",
                                                                              "thread.id": 3}, RES, None)])
    assert out.getvalue().splitlines() == [
        "event shop.tick  shop pid 42  in span 0000000000000005 of trace 000000000000000000000000000000ab  n=0",
        'event a\\x1b[2Jb  shop pid 42  s="q\\n"',
    ]


# --- JSON lines ----------------------------------------------------------------------------

def test_jsonl(tmp_path):
    path = tmp_path / "out.jsonl"
    exp = JsonLinesExporter(str(path))
    span = mkspan("op", 5, parent=4, attrs={"b": b"\x00\xff", "f": float("nan"), "l": ["x"]},
                  status=Status(StatusCode.ERROR, "boom"))
    assert exp.export([span]) == SpanExportResult.SUCCESS
    exp.shutdown()
    (line,) = path.read_text().splitlines()
    d = json.loads(line)
    assert d["name"] == "op" and d["span_id"] == "0000000000000005" and d["parent_span_id"] == "0000000000000004"
    assert d["trace_id"] == "%032x" % 0xAB and d["duration_ns"] == 1_000_000
    assert d["attributes"] == {"b": {"bytes_base64": "AP8="}, "f": "nan", "l": ["x"]}
    assert d["status"] == {"code": "ERROR", "description": "boom"}
    assert d["resource"]["service.name"] == "shop"


def reference_line(span) -> str:
    """The JSON line as the exporter wrote it with json.dumps of a dict per span (before the line was
    assembled from cached parts): the format users parse, which must not change."""
    def value(v):
        if isinstance(v, bytes):
            return {"bytes_base64": base64.b64encode(v).decode()}
        if isinstance(v, (list, tuple)):
            return [value(x) for x in v]
        if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
            return repr(v)
        return v
    return json.dumps({
        "name": span.name, "trace_id": "%032x" % span.context.trace_id, "span_id": "%016x" % span.context.span_id,
        "parent_span_id": "%016x" % span.parent.span_id if span.parent else None,
        "trace_flags": int(span.context.trace_flags), "kind": span.kind.name,
        "start_time_unix_nano": span.start_time, "end_time_unix_nano": span.end_time,
        "duration_ns": (span.end_time or 0) - (span.start_time or 0),
        "status": {"code": span.status.status_code.name, "description": span.status.description},
        "attributes": {k: value(v) for k, v in (span.attributes or {}).items()},
        "events": [{"name": e.name, "time_unix_nano": e.timestamp,
                    "attributes": {k: value(v) for k, v in (e.attributes or {}).items()}} for e in span.events],
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
        "resource": {k: value(v) for k, v in (span.resource.attributes if span.resource else {}).items()},
    }, ensure_ascii=False) + "\n"


def test_jsonl_lines_are_the_documented_format(tmp_path):
    other = Resource({"service.name": "é\x1b\"q", "process.command_args": ["a", "b"], "f": 1.5, "ok": True})
    spans = [
        mkspan("op", 5, parent=4, attrs={"b": b"\x00\xff", "f": float("nan"), "l": ["x", "y"], "i": -3}),
        mkspan("é ✓ \"quoted\"\n", 6, kind=SpanKind.SERVER, attrs={"s": "x\x00y", "t": True, "n": 2**63 - 1},
               status=Status(StatusCode.ERROR, "ValueError: bad"),
               events=[Event("exception", {"exception.type": "ValueError", "raw": b"\x01"}, T0 + 5)]),
        mkspan("", 7, attrs={}, resource=other, kind=SpanKind.CLIENT),
        mkspan("inf", 8, attrs={"f": float("inf"), "g": -0.5}, resource=other),
        mkspan("again", 9, parent=8, status=Status(StatusCode.ERROR)),
    ]
    path = tmp_path / "out.jsonl"
    exp = JsonLinesExporter(str(path))
    exp.export(spans)
    exp.export(spans[:2])  # the cached parts serve a second time
    exp.shutdown()
    assert path.read_text() == "".join(reference_line(s) for s in spans + spans[:2])


def test_jsonl_event_lines(tmp_path):
    path = tmp_path / "out.jsonl"
    exp = JsonLinesExporter(str(path))
    with_ids, without = events(1, ids=True)[0], events(2)[1]
    without.attributes["raw"] = b"\x00"
    exp.export_events([with_ids, without])
    exp.export([mkspan("op", 5)])
    exp.shutdown()
    first, second, span = [json.loads(line) for line in path.read_text().splitlines()]
    assert first == {"signal": "log", "event_name": "shop.tick", "time_unix_nano": T0, "trace_id": "%032x" % 0xAB,
                     "span_id": "%016x" % 5, "trace_flags": 1, "attributes": {"event.name": "shop.tick", "n": 0},
                     "scope": "shop", "resource": {"service.name": "shop", "process.pid": 42}}
    assert (second["trace_id"], second["span_id"], second["trace_flags"]) == (None, None, 0)
    assert second["attributes"]["raw"] == {"bytes_base64": "AA=="}
    assert "signal" not in span  # span lines are as they were


def test_jsonl_unwritable_file_is_a_clear_error(tmp_path):
    with pytest.raises(TracerError, match="cannot open --output"):
        JsonLinesExporter(str(tmp_path / "missing-dir" / "x.jsonl"))


# --- OTLP settings ---------------------------------------------------------------------------

def test_otlp_defaults():
    s = resolve("traces", env={})
    assert s.protocol == "grpc"
    assert s.endpoint == "http://localhost:4317"
    assert (s.host, s.port) == ("localhost", 4317)
    h = resolve("traces", Flags(protocol="http/protobuf"), {})
    assert h.endpoint == "http://localhost:4318/v1/traces"


def test_otlp_environment_and_flag_precedence():
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}
    assert resolve("traces", env=env).endpoint == "http://c:4318/v1/traces"
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://t:9/custom"
    assert resolve("traces", env=env).endpoint == "http://t:9/custom"
    assert resolve("traces", Flags(endpoint="http://flag:1"), env).endpoint == "http://flag:1/v1/traces"
    assert resolve("traces", Flags(endpoint="http://flag:1/x/y"), env).endpoint == "http://flag:1/x/y"
    del env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]  # a URL path, which a gRPC endpoint cannot have
    assert resolve("traces", Flags(protocol="grpc"), env).protocol == "grpc"
    with pytest.raises(TracerError, match="http/json"):
        resolve("traces", env={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_unreachable_endpoint_fails_fast():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.monotonic()
    with pytest.raises(EndpointUnreachable, match="cannot reach the OTLP endpoint"):
        check_reachable(resolve("traces", Flags(endpoint="http://127.0.0.1:%d" % port), {}))
    assert time.monotonic() - t < 5


def test_otlp_exporters_are_built():
    grpc_exp = OtlpSpanExporter(resolve("traces", Flags(endpoint="http://127.0.0.1:1", compression="gzip",
                                                        timeout=2), {}))
    assert isinstance(grpc_exp.client, GrpcClient)
    grpc_exp.shutdown()
    http_exp = OtlpSpanExporter(resolve("traces", Flags(endpoint="http://127.0.0.1:1", protocol="http/protobuf",
                                                        headers=[("a", "b")]), {}))
    assert isinstance(http_exp.client, HttpClient)
    http_exp.shutdown()
    with pytest.raises(TracerError, match="compression"):
        resolve("traces", Flags(compression="brotli"), {})


# --- pipeline ------------------------------------------------------------------------------------

class Recorder(SpanExporter):
    def __init__(self, result=SpanExportResult.SUCCESS, block: threading.Event = None):
        self.result = result
        self.block = block
        self.batches = []
        self.event_batches = []
        self.event_result = result
        self.shut = False

    def export(self, spans):
        if self.block is not None:
            self.block.wait(30)
        self.batches.append(list(spans))
        return self.result

    def export_events(self, events):
        self.event_batches.append(list(events))
        return self.event_result

    def shutdown(self):
        self.shut = True
        if self.block is not None:
            self.block.set()


def spans(n):
    return [mkspan("s", i + 1) for i in range(n)]


def test_pipeline_exports_in_batches_and_counts():
    stats, rec = Stats(), Recorder()
    p = ExportPipeline(rec, stats, batch_size=10, linger_s=0.01)
    p.submit(spans(25))
    assert p.flush(5)
    p.shutdown(5)
    assert stats.exported == 25 and sum(map(len, rec.batches)) == 25
    assert max(map(len, rec.batches)) <= 10 and rec.shut


def test_pipeline_counts_failed_exports():
    stats = Stats()
    p = ExportPipeline(Recorder(SpanExportResult.FAILURE), stats, batch_size=4, linger_s=0.01)
    p.submit(spans(10))
    p.flush(5)
    p.shutdown(5)
    assert stats.exported == 0 and stats.dropped["export_failed"] == 10 and stats.lost == 10


def events(n, ids=False):
    return [LogEvent("shop.tick", T0 + i, 0xAB if ids else 0, 5 if ids else 0, 1 if ids else 0,
                     {"event.name": "shop.tick", "n": i}, RES, InstrumentationScope("shop")) for i in range(n)]


def test_pipeline_sends_spans_and_events_to_their_own_export_and_counts_them_apart():
    stats, rec = Stats(), Recorder()
    rec.event_result = SpanExportResult.FAILURE
    p = ExportPipeline(rec, stats, batch_size=10, linger_s=0.01)
    p.submit(spans(3) + events(4) + spans(2))
    assert p.flush(5)
    p.shutdown(5)
    assert [s.span_id for b in rec.batches for s in b] == [1, 2, 3, 1, 2]
    assert [e.attributes["n"] for b in rec.event_batches for e in b] == [0, 1, 2, 3]
    assert stats.exported == 5 and stats.lost == 0
    assert stats.events_exported == 0 and stats.events_dropped["export_failed"] == 4


def test_pipeline_counts_events_dropped_for_want_of_room_as_events():
    stats, gate = Stats(), threading.Event()
    p = ExportPipeline(Recorder(block=gate), stats, max_queue=5, batch_size=100, linger_s=5)
    p.submit(spans(3) + events(4))
    assert stats.dropped["queue_full"] == 0 and stats.events_dropped["queue_full"] == 2
    gate.set()
    p.shutdown(5)
    assert stats.exported == 3 and stats.events_exported == 2


def test_pipeline_queue_is_bounded_and_never_blocks_the_caller():
    stats, gate = Stats(), threading.Event()
    p = ExportPipeline(Recorder(block=gate), stats, max_queue=100, batch_size=10, linger_s=0.01)
    t = time.monotonic()
    for _ in range(50):
        p.submit(spans(10))
    assert time.monotonic() - t < 1.0
    assert stats.dropped["queue_full"] >= 390
    gate.set()
    p.shutdown(5)
    assert stats.exported + sum(stats.dropped.values()) == 500


def test_pipeline_shutdown_does_not_hang_on_a_stuck_exporter():
    stats, gate = Stats(), threading.Event()
    p = ExportPipeline(Recorder(block=gate), stats, batch_size=10, linger_s=0.01)
    p.submit(spans(30))
    time.sleep(0.1)
    t = time.monotonic()
    p.shutdown(timeout=0.5)  # the exporter's shutdown releases the stuck export
    assert time.monotonic() - t < 3
    assert stats.exported + sum(stats.dropped.values()) == 30


def test_pre_encoded_spans_are_shown_and_written_as_spans(tmp_path):
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from spanprobe_tracer.assemble.telemetry import EncodedSpan
    from tests.support.spans import as_span

    span = mkspan("GET /x", 1, kind=SpanKind.SERVER, attrs={"http.route": "/x"})
    readable = ReadableSpan(name=span.name, context=span.context, parent=None, resource=RES,
                            attributes=span.attributes, kind=span.kind, status=span.status,
                            start_time=span.start_time, end_time=span.end_time,
                            instrumentation_scope=span.instrumentation_scope)
    body = encode_spans([readable]).resource_spans[0].scope_spans[0].spans[0].SerializeToString()
    encoded = EncodedSpan(body, RES, span.instrumentation_scope)
    path = tmp_path / "out.jsonl"
    exp = JsonLinesExporter(str(path))
    exp.export([encoded])
    exp.shutdown()
    expected = as_span(readable)
    expected.trace_flags = 0  # the official encoder puts only the is-remote bits in Span.flags
    assert path.read_text() == reference_line(expected)
    out = io.StringIO()
    ConsoleExporter(out).export([encoded])
    assert out.getvalue().splitlines()[1] == '└─ GET /x [server] 1.00 ms  http.route="/x"'
