"""Records -> OpenTelemetry ReadableSpans: ids, times, status, events, resources (no BPF)."""

from __future__ import annotations


import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind, StatusCode

from spanprobe_tracer.assemble import SpanBuilder
from spanprobe_tracer.assemble.resource import derive_service_name, parse_resource_attributes, python_entry
from spanprobe_tracer.decode import PointRecord, SpanRecord, ValueNotes
from spanprobe_tracer.kernel import PointType, SpanType

RES = Resource({"service.name": "svc", "process.pid": 100})
SPAN = SpanType("GET /x", "server", "shop", {"function": "get", "filepath": "/a.py", "lineno": 3}, None, None)
EVENT = PointType("cache.miss", "event", "shop", None)
PLAIN = PointType("shop.tick", "plain", "shop", None)
OFFSET = 1_700_000_000_000_000_000


def builder(**kw):
    return SpanBuilder(lambda pid: RES, lambda ns: ns + OFFSET, **kw)


def span_rec(span_id=2, parent=1, status=0, error_type="", message="", attrs=None, notes=None, pid=100,
             trace_id=0xABC, flags=1):
    return SpanRecord(SPAN, pid, 7, 6, 1_000, 5_000, trace_id, span_id, parent, flags, status, error_type,
                      message, dict(attrs or {"a": 1}), notes)


def event_rec(span_id=2, pid=100, ts=2_000, trace_id=0xABC):
    return PointRecord(EVENT, pid, 7, ts, span_id, trace_id, 1, {"k": "v"}, None)


def test_ids_times_kind_and_code_attributes():
    s = builder().span(span_rec())
    assert s.name == "GET /x" and s.kind == SpanKind.SERVER
    assert (s.context.trace_id, s.context.span_id, s.parent.span_id) == (0xABC, 2, 1)
    assert not s.parent.is_remote and s.context.trace_flags.sampled
    assert (s.start_time, s.end_time) == (OFFSET + 1_000, OFFSET + 5_000)
    assert s.attributes["code.function.name"] == "get" and s.attributes["code.file.path"] == "/a.py"
    assert s.attributes["code.line.number"] == 3 and s.attributes["thread.id"] == 6
    assert s.attributes["a"] == 1
    assert s.status.status_code == StatusCode.UNSET
    assert s.resource is RES and s.instrumentation_scope.name == "shop"


def test_root_span_has_no_parent():
    assert builder().span(span_rec(parent=0)).parent is None


def test_error_status_with_exception_event():
    s = builder().span(span_rec(status=1, error_type="ValueError", message="bad input"))
    assert s.status.status_code == StatusCode.ERROR
    assert s.status.description == "ValueError: bad input"
    assert s.attributes["error.type"] == "ValueError"
    (exc,) = s.events
    assert exc.name == "exception" and exc.timestamp == s.end_time
    assert dict(exc.attributes) == {"exception.type": "ValueError", "exception.message": "bad input"}


def test_cancelled_is_not_an_error():
    s = builder().span(span_rec(status=2, error_type="CancelledError"))
    assert s.status.status_code == StatusCode.UNSET
    assert s.attributes["spanprobe.cancelled"] is True
    assert "error.type" not in s.attributes


def test_unknown_status_is_an_error_saying_so():
    s = builder().span(span_rec(status=9))
    assert s.status.status_code == StatusCode.ERROR and "unknown span status 9" in s.status.description


def test_value_notes_become_attributes():
    s = builder().span(span_rec(notes=ValueNotes(["p"], ["q"], ["r"])))
    assert list(s.attributes["spanprobe.truncated"]) == ["p"]
    assert list(s.attributes["spanprobe.conversion_failed"]) == ["q"]
    assert list(s.attributes["spanprobe.read_failed"]) == ["r"]


def test_events_join_their_span():
    b = builder()
    assert b.point(event_rec(span_id=2)) is None
    assert b.point(event_rec(span_id=2, ts=3_000)) is None
    assert b.pending_events == 2
    s = b.span(span_rec(span_id=2))
    assert [(e.name, e.timestamp) for e in s.events] == [("cache.miss", OFFSET + 2_000), ("cache.miss", OFFSET + 3_000)]
    assert b.pending_events == 0


def test_events_of_another_process_do_not_join():
    b = builder()
    b.point(event_rec(span_id=2, pid=999))
    assert b.span(span_rec(span_id=2, pid=100)).events == ()
    assert b.pending_events == 1


def test_orphan_events_become_zero_length_children():
    b = builder(event_wait_s=0.0)
    b.point(event_rec(span_id=42))
    (s,) = b.expire_events()
    assert s.name == "cache.miss" and s.start_time == s.end_time == OFFSET + 2_000
    assert s.parent.span_id == 42 and s.context.trace_id == 0xABC
    assert s.attributes["spanprobe.event"] is True and s.attributes["k"] == "v"
    assert b.orphan_events == 1


def test_orphan_events_dropped_when_their_span_was_filtered():
    b = builder(event_wait_s=0.0, drop_orphan_events=True)
    b.point(event_rec(span_id=42))
    assert b.expire_events() == [] and b.dropped_orphan_events == 1


def test_event_buffer_is_bounded():
    b = builder(max_pending_events=3)
    for sid in range(1, 6):
        b.point(event_rec(span_id=sid))
    released = b.expire_events()
    assert len(released) == 2 and b.pending_events == 3
    assert sorted(s.parent.span_id for s in released) == [1, 2]  # oldest first


def test_events_released_when_their_process_exits():
    b = builder()
    b.point(event_rec(span_id=5, pid=100))
    b.point(event_rec(span_id=6, pid=200))
    assert [s.parent.span_id for s in b.expire_events(pid=100)] == [5]
    assert b.pending_events == 1


def test_event_outside_any_span_and_plain_probe():
    b = builder()
    s = b.point(event_rec(span_id=0, trace_id=0))
    assert s is not None and s.parent is None and s.context.trace_id != 0
    p = b.point(PointRecord(PLAIN, 100, 7, 9, 0, 0, 0, {"n": 1}, None))
    assert p.name == "shop.tick" and p.kind == SpanKind.INTERNAL and p.attributes["n"] == 1
    assert p.start_time == p.end_time == OFFSET + 9 and p.parent is None


# --- resources ------------------------------------------------------------------------

def test_resource_attributes_parsing():
    assert parse_resource_attributes("service.name=a%20b, deployment.environment=prod,bad,=x") == {
        "service.name": "a b", "deployment.environment": "prod"}


@pytest.mark.parametrize("argv,expect", [
    (["python3", "app.py"], "app"),
    (["python3", "-u", "/srv/app/server.py", "--port", "1"], "server"),
    (["python", "-m", "http.server", "8000"], "http.server"),
    (["python3", "-X", "dev", "-mdemo_apps.asyncjobs"], "demo_apps.asyncjobs"),
    (["python3", "-W", "ignore", "pkg/__main__.py"], "pkg"),
    (["python3", "-c", "print(1)"], None),
    (["python3"], None),
    # behind spanprobe's launcher, the program it runs (issue 14 item 4)
    (["python3", "/app/.venv/bin/spanprobe-instrument", "--config", "p.toml", "/srv/shop.py", "-v"], "shop"),
    (["python3", "-m", "spanprobe.instrument", "--config=p.toml", "-m", "http.server", "80"], "http.server"),
    (["python3", "-mspanprobe.instrument", "--config", "p.toml", "pkg/__main__.py"], "pkg"),
    (["python3", "/app/.venv/bin/spanprobe-instrument", "--no-such-option"], "spanprobe-instrument"),
])
def test_python_entry(argv, expect):
    assert python_entry(argv) == expect


def test_service_name_falls_back_to_the_executable():
    assert derive_service_name("python3.11", ["python3.11", "-c", "x"]) == "python3.11"
    assert derive_service_name("nginx", ["nginx", "-g", "daemon off;"]) == "nginx"
    assert derive_service_name("python3", ["python3", "tool.py"]) == "tool"
