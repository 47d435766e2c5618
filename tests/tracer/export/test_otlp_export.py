"""End to end: a real application's probes, the real tracer, a real OTLP receiver.

What a collector receives is checked field by field: span names, ids exactly
as the application's probes reported them, parent links, kinds, attribute
types, times inside the wall-clock window the spans were fired in, status,
events and the per-process resource.
"""

from __future__ import annotations

import socket

import pytest

from opentelemetry.proto.trace.v1 import trace_pb2

from tests.support.tracer_helpers import SITES, Tracer, stats_of, wait_attached

pytestmark = pytest.mark.bpf

N_TRACES = 3
N_PLAIN = 2


def trace_and_collect(tracee, receiver, protocol, extra=()):
    tracee.send("load shop")
    tracer = Tracer("trace", "--pid", str(tracee.pid), "--exporter", "otlp", "--otlp-protocol", protocol,
                    "--otlp-endpoint", receiver.endpoint, "--duration", "60", *extra)
    try:
        wait_attached(tracer, SITES)
        fired = tracee.send("spans shop %d" % N_TRACES)
        tracee.send("plain shop %d" % N_PLAIN)
        expected = N_TRACES * 3
        assert receiver.collector.wait_for(lambda c: c.count >= expected and c.log_count >= N_PLAIN, timeout=60), \
            "received %d of %d spans, %d of %d events" % (receiver.collector.count, expected,
                                                          receiver.collector.log_count, N_PLAIN)
        status = tracer.stop()
    finally:
        tracer.kill()
    assert status == 0, tracer.stderr
    assert "lost: 0 " in tracer.stderr, tracer.stderr
    return fired, receiver.collector


def check_spans(fired, collector, tracee_pid, service_name):
    spans = collector.spans
    assert len(spans) == N_TRACES * 3
    by_id = {s.span_id: s for s in spans}
    for i, ids in enumerate(fired["traces"]):
        root, ok_child, bad_child = by_id[ids["root"]], by_id[ids["ok_child"]], by_id[ids["bad_child"]]
        for s in (root, ok_child, bad_child):
            assert s.trace_id == ids["trace_id"]
            assert fired["t0"] <= s.span.start_time_unix_nano <= s.span.end_time_unix_nano <= fired["t1"]
            # The official encoder sets the parent-is-remote bits (not the W3C flags):
            # has_is_remote, and local, since the parent came from the same process.
            assert s.span.flags & 0x300 == 0x100
            assert s.scope == "shop"
        # Names, kinds, links.
        assert root.name == "GET /items" and root.span.kind == trace_pb2.Span.SPAN_KIND_SERVER
        assert root.parent_span_id == ""
        assert ok_child.name == bad_child.name == "db.query"
        assert ok_child.span.kind == trace_pb2.Span.SPAN_KIND_CLIENT
        assert ok_child.parent_span_id == bad_child.parent_span_id == ids["root"]
        assert root.span.start_time_unix_nano <= ok_child.span.start_time_unix_nano
        assert bad_child.span.end_time_unix_nano <= root.span.end_time_unix_nano
        # Attribute names and types, start and end probes merged.
        a = root.attributes
        assert a["http.request.method"] == "GET" and a["url.path"] == "/items/%d" % i
        assert a["user.id"] == -i and a["retry"] == 3 and a["ratio"] == 0.25
        assert a["big"] == str(2**64 - 1)  # beyond int64: exported as a decimal string
        assert a["payload"] == b"\x00\xffpayload"
        assert a["http.response.status_code"] == 200 and a["cached"] is True
        assert a["code.function.name"] == "handle" and a["code.file.path"] == "/srv/app.py"
        assert a["code.line.number"] == 42
        assert isinstance(a["thread.id"], int)
        value_kinds = {kv.key: kv.value.WhichOneof("value") for kv in root.span.attributes}
        assert value_kinds["user.id"] == "int_value" and value_kinds["ratio"] == "double_value"
        assert value_kinds["cached"] == "bool_value" and value_kinds["payload"] == "bytes_value"
        # Status.
        assert root.span.status.code == trace_pb2.Status.STATUS_CODE_UNSET
        assert ok_child.span.status.code == trace_pb2.Status.STATUS_CODE_UNSET
        assert bad_child.span.status.code == trace_pb2.Status.STATUS_CODE_ERROR
        assert "TimeoutError" in bad_child.span.status.message
        assert bad_child.attributes["error.type"] == "TimeoutError"
        exc = [e for e in bad_child.span.events if e.name == "exception"]
        assert len(exc) == 1
        from tests.support.otlp_receiver import attributes
        assert attributes(exc[0].attributes) == {"exception.type": "TimeoutError",
                                                 "exception.message": "db took too long"}
        # A value the application failed to convert is omitted and named.
        assert "db.query.text" not in bad_child.attributes
        assert bad_child.attributes["spanprobe.conversion_failed"] == ["db.query.text"]
        assert ok_child.attributes["db.query.text"] == "SELECT %d" % i
        # The event joined its span.
        events = [e for e in ok_child.span.events if e.name == "cache.miss"]
        assert len(events) == 1
        ev = attributes(events[0].attributes)
        assert ev == {"note.text": "miss \x1b[31m", "note.n": -7}
        assert ok_child.span.start_time_unix_nano <= events[0].time_unix_nano <= ok_child.span.end_time_unix_nano
    # The plain probe's hits, fired outside any span: OpenTelemetry events (log records), no span ids.
    ticks = collector.logs
    assert sorted(t.attributes["n"] for t in ticks) == list(range(N_PLAIN))
    for t in ticks:
        assert t.event_name == "shop.tick" and t.attributes["event.name"] == "shop.tick"
        assert isinstance(t.attributes["thread.id"], int) and t.scope == "shop"
        assert (t.trace_id, t.span_id, t.record.flags) == ("", "", 0)
        assert fired["t0"] <= t.record.time_unix_nano == t.record.observed_time_unix_nano
    # One resource per process, from /proc, for spans and events alike.
    for s in spans + ticks:
        r = s.resource
        assert r["service.name"] == service_name
        assert r["process.pid"] == tracee_pid
        assert r["process.executable.name"].startswith("python")
        assert "tracee.py" in r["process.command_line"]
        assert r["process.runtime.name"] == "cpython"
        assert r["process.runtime.version"].startswith("3.")
        assert r["host.name"] == socket.gethostname()


def test_grpc_end_to_end(tracee_factory, grpc_receiver):
    tracee = tracee_factory(env={"OTEL_SERVICE_NAME": "checkout-svc"})
    fired, collector = trace_and_collect(tracee, grpc_receiver, "grpc")
    check_spans(fired, collector, tracee.pid, "checkout-svc")


def test_http_protobuf_end_to_end(tracee_factory, http_receiver):
    tracee = tracee_factory(env={"OTEL_RESOURCE_ATTRIBUTES": "service.name=from%20attrs,deployment.environment=test"})
    fired, collector = trace_and_collect(tracee, http_receiver, "http/protobuf",
                                         extra=("--otlp-header", "x-team=obs", "--otlp-compression", "gzip"))
    check_spans(fired, collector, tracee.pid, "from attrs")
    assert collector.spans[0].resource["deployment.environment"] == "test"
    assert all(h.get("x-team") == "obs" for h in collector.headers)


def test_service_name_derived_from_program(tracee, grpc_receiver):
    fired, collector = trace_and_collect(tracee, grpc_receiver, "grpc")
    check_spans(fired, collector, tracee.pid, "tracee")


def test_otlp_settings_from_environment(tracee, grpc_receiver):
    """No OTLP flags: endpoint and protocol come from the standard variables."""
    tracee.send("load shop")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_HEADERS": "x-from-env=yes"}
    tracer = Tracer("trace", "--pid", str(tracee.pid), "--exporter", "otlp", "--duration", "60", env=env)
    try:
        wait_attached(tracer, SITES)
        tracee.send("spans shop 1")
        assert grpc_receiver.collector.wait_for(lambda c: c.count >= 3, timeout=60)
        assert tracer.stop() == 0, tracer.stderr
    finally:
        tracer.kill()
    assert grpc_receiver.collector.headers[0].get("x-from-env") == "yes"


def test_collector_going_down_costs_no_hang_and_every_span_is_counted(tracee, grpc_receiver, tmp_path):
    import time

    stats_file = str(tmp_path / "stats.json")
    tracee.send("load shop")
    tracer = Tracer("trace", "--pid", str(tracee.pid), "--exporter", "otlp", "--otlp-endpoint",
                    grpc_receiver.endpoint, "--otlp-timeout", "2", "--flush-timeout", "3",
                    "--stats-file", stats_file, "--duration", "120")
    try:
        wait_attached(tracer, SITES)
        tracee.send("spans shop 2")
        assert grpc_receiver.collector.wait_for(lambda c: c.count >= 6, timeout=60)
        # The collector dies, once it has answered what it received: a request it took
        # but never answered would count as failed, and the first six as not exported.
        grpc_receiver.stop(grace=10)
        tracee.send("spans shop 4")
        time.sleep(1.0)
        t = time.monotonic()
        status = tracer.stop()
        stop_s = time.monotonic() - t
    finally:
        tracer.kill()
    assert status == 0, tracer.stderr
    assert stop_s < 15, "shutdown took %.1f s" % stop_s
    stats = stats_of(stats_file)
    assert stats["exported"] == 6
    assert stats["dropped"]["export_failed"] + stats["dropped"]["shutdown"] == 12
    assert stats["lost"] == 12
