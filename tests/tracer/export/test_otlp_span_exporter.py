"""OtlpSpanExporter side by side with the official OTLP exporters, and what it reports.

For the same spans and the same OTEL_EXPORTER_OTLP_* environment, a receiver
gets from ours and from the official exporter (opentelemetry-exporter-otlp-
proto-grpc / -http) the same request, field by field, at the same path, with
the same content type, compression and headers; only the user agent differs,
and names spanprobe.
"""

from __future__ import annotations

import logging
import time

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from spanprobe_tracer.export import ExportPipeline
from spanprobe_tracer.export.otlp.delivery import Backoff
from spanprobe_tracer.export.otlp.settings import Flags, resolve
from spanprobe_tracer.export.otlp.span_exporter import OtlpSpanExporter
from spanprobe_tracer.session import Stats
from tests.support.otlp_receiver import GrpcReceiver, HttpReceiver, Reply
from tests.support.spans import as_span

#: HTTP headers the requests library (under the official HTTP exporter) adds by habit, which
#: HTTP/1.1 implies or which only concern the response: keep-alive is the default, any type is accepted.
REQUESTS_HABITS = {"accept", "connection"}


def make_spans():
    """Spans with what an exporter must carry: resource, two scopes, every attribute type, events,
    links, kinds, an error status, a remote parent."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop", "process.pid": 42,
                                                        "host.arch": ["x86_64"]}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    web = provider.get_tracer("web", "1.2", schema_url="https://opentelemetry.io/schemas/1.21.0")
    db = provider.get_tracer("db")
    with web.start_as_current_span("GET /items", kind=SpanKind.SERVER,
                                   attributes={"http.route": "/items", "n": 3, "ok": True, "ratio": 0.5,
                                               "tags": ["a", "b"], "codes": [1, 2], "weights": [0.1, 2.5],
                                               "flags": [True, False], "text": "héllo\n"}) as root:
        root.add_event("cache miss", {"key": "items:1", "size": 17})
        with db.start_as_current_span("db.query", kind=SpanKind.CLIENT, links=[Link(root.get_span_context(),
                                                                                      {"why": "batch"})]) as q:
            q.set_status(Status(StatusCode.ERROR, "timeout after 5 s"))
            q.record_exception(ValueError("no rows"))
        with db.start_as_current_span("db.commit", kind=SpanKind.INTERNAL):
            pass
    return memory.get_finished_spans()


def our_spans():
    """make_spans() as the tracer's own Spans, which our exporter takes."""
    return [as_span(s) for s in make_spans()]


def official_exporter(protocol):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


@pytest.mark.parametrize("compression", [None, "gzip"])  # the official gRPC exporter refuses "none"
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_same_request_path_and_headers_as_the_official_exporter(monkeypatch, protocol, compression):
    receiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    try:
        for name, value in {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                            "OTEL_EXPORTER_OTLP_HEADERS": "x-team=obs,x-key=a%20b",
                            "OTEL_EXPORTER_OTLP_COMPRESSION": compression}.items():
            if value is not None:
                monkeypatch.setenv(name, value)
        spans = make_spans()
        official, ours = official_exporter(protocol), OtlpSpanExporter(resolve("traces"))
        assert official.export(spans) == ours.export([as_span(s) for s in spans]) == SpanExportResult.SUCCESS
        official.shutdown()
        ours.shutdown()
        theirs, mine = receiver.collector.arrivals
        assert MessageToDict(mine.request) == MessageToDict(theirs.request)
        assert mine.request == theirs.request
        assert len(mine.request.resource_spans[0].scope_spans) == 2
        assert (mine.path, mine.encoding) == (theirs.path, theirs.encoding)
        assert mine.encoding == ("gzip" if protocol != "grpc" and compression else "")
        assert mine.headers["x-team"] == theirs.headers["x-team"] == "obs"
        assert mine.headers["x-key"] == theirs.headers["x-key"] == "a b"
        assert mine.headers["user-agent"].startswith("spanprobe-OTLP-Exporter-Python/")
        assert theirs.headers["user-agent"].startswith("OTel-OTLP-Exporter-Python/")
        if protocol == "grpc":
            assert set(mine.headers) == set(theirs.headers)
        else:
            assert mine.headers["content-type"] == theirs.headers["content-type"] == "application/x-protobuf"
            assert set(mine.headers) <= set(theirs.headers)
            assert set(theirs.headers) - set(mine.headers) <= REQUESTS_HABITS
    finally:
        receiver.stop()


def exporter_for(receiver, **kw):
    return OtlpSpanExporter(resolve("traces", Flags(endpoint=receiver.endpoint), {}),
                            backoff=Backoff(initial=0.05, maximum=0.2), **kw)


def test_a_failed_export_is_a_failure_with_its_reason_logged(grpc_receiver, caplog):
    grpc_receiver.collector.script.append(Reply(grpc.StatusCode.INVALID_ARGUMENT, "span 2 has no name\x1b[2J"))
    exporter = exporter_for(grpc_receiver)
    with caplog.at_level(logging.WARNING, "spanprobe.tracer"):
        assert exporter.export(our_spans()) == SpanExportResult.FAILURE
    exporter.shutdown()
    assert "OTLP export of 3 spans to %s failed after 1 attempt(s): INVALID_ARGUMENT 'span 2 has no name" \
        % grpc_receiver.endpoint in caplog.text
    assert "\x1b" not in caplog.text          # the server's text cannot drive the terminal


def test_repeated_failures_are_logged_once_in_a_while(grpc_receiver, caplog):
    grpc_receiver.collector.fail_with = grpc.StatusCode.PERMISSION_DENIED
    exporter = exporter_for(grpc_receiver)
    with caplog.at_level(logging.WARNING, "spanprobe.tracer"):
        for _ in range(5):
            assert exporter.export(our_spans()) == SpanExportResult.FAILURE
    exporter.shutdown()
    assert caplog.text.count("PERMISSION_DENIED") == 1
    assert len(grpc_receiver.collector.arrivals) == 5


def test_rejected_spans_are_handed_over_and_the_batch_counts_as_exported(grpc_receiver, caplog):
    grpc_receiver.collector.script.append(Reply(rejected=2))
    rejected = []
    exporter = exporter_for(grpc_receiver, on_rejected=lambda n, message: rejected.append((n, message)))
    with caplog.at_level(logging.WARNING, "spanprobe.tracer"):
        assert exporter.export(our_spans()) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert rejected == [(2, "rejected by the script")]
    assert "the OTLP server rejected 2 of 3 spans: 'rejected by the script'" in caplog.text


def test_nothing_to_export_sends_nothing_and_shutdown_ends_exporting(grpc_receiver):
    exporter = exporter_for(grpc_receiver)
    assert exporter.export([]) == SpanExportResult.SUCCESS
    assert exporter.force_flush() is True
    exporter.shutdown()
    assert exporter.export(our_spans()) == SpanExportResult.FAILURE
    assert grpc_receiver.collector.arrivals == []


def test_only_traces_settings_make_a_span_exporter():
    with pytest.raises(ValueError, match="exports traces, not logs"):
        OtlpSpanExporter(resolve("logs", env={}))


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_export_thread_stops_promptly_when_the_collector_is_down(protocol):
    """The tracer's pipeline, unchanged, over our exporter: a collector that says UNAVAILABLE / 503 and asks
    for a minute's pause does not hold the tracer's exit; every span is counted."""
    receiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    try:
        status = grpc.StatusCode.UNAVAILABLE if protocol == "grpc" else 503
        receiver.collector.script.extend([Reply(status, retry_after=60)] * 5)
        exporter = OtlpSpanExporter(resolve("traces", Flags(endpoint=receiver.endpoint, protocol=protocol,
                                                            timeout=600.0), {}))
        stats = Stats()
        pipeline = ExportPipeline(exporter, stats, batch_size=3, linger_s=0.01)
        pipeline.submit(our_spans() * 3)
        assert receiver.collector.wait_for(lambda c: len(c.arrivals) == 1, timeout=10)
        t = time.monotonic()
        pipeline.shutdown(timeout=1.0)
        assert time.monotonic() - t < 5.0
        assert stats.exported == 0
        assert stats.dropped["export_failed"] + stats.dropped["shutdown"] == 9
        assert len(receiver.collector.arrivals) == 1
    finally:
        receiver.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_events_go_to_the_logs_endpoint_and_rejections_are_handed_over(protocol):
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from spanprobe_tracer.assemble.telemetry import LogEvent

    receiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    try:
        flags = Flags(endpoint=receiver.endpoint, protocol=protocol)
        rejected = []
        exporter = OtlpSpanExporter(resolve("traces", flags, {}), events_settings=resolve("logs", flags, {}),
                                    on_events_rejected=lambda n, message: rejected.append(n))
        events = [LogEvent("shop.tick", 1_700_000_000_000_000_000 + i, 0xAB, 5, 1, {"event.name": "shop.tick", "n": i},
                           Resource({"service.name": "shop"}), InstrumentationScope("shop")) for i in range(3)]
        receiver.collector.script.append(Reply(rejected=1))
        assert exporter.export_events(events) == SpanExportResult.SUCCESS
        assert exporter.export_events(events[:1]) == SpanExportResult.SUCCESS
        exporter.shutdown()
        first = receiver.collector.arrivals[0]
        assert first.signal == "logs" and first.path == (
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export" if protocol == "grpc" else "/v1/logs")
        assert rejected == [1]
        assert [r.attributes["n"] for r in receiver.collector.logs] == [0, 1, 2, 0]
        assert receiver.collector.logs[0].event_name == "shop.tick" and receiver.collector.logs[0].span_id == "%016x" % 5
    finally:
        receiver.stop()


def test_events_without_logs_settings_fail_and_say_why(grpc_receiver, caplog):
    from spanprobe_tracer.assemble.telemetry import LogEvent

    exporter = exporter_for(grpc_receiver)
    event = LogEvent("shop.tick", 1, 0, 0, 0, {"event.name": "shop.tick"}, Resource({}), None)
    with caplog.at_level(logging.WARNING, "spanprobe.tracer"):
        assert exporter.export_events([event]) == SpanExportResult.FAILURE
    exporter.shutdown()
    assert "1 events not exported: this exporter has no OTLP logs settings" in caplog.text
    assert grpc_receiver.collector.arrivals == []
