"""The fast OTLP encoder writes exactly the bytes the official encoder writes, for the same spans
(built here as SDK ReadableSpans for the official encoder, and as the tracer's own Spans for ours)."""

from __future__ import annotations

import math

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

from spanprobe_tracer.assemble.telemetry import LogEvent
from spanprobe_tracer.export.otlp.wire import encode_logs_request, encode_request as encode_ours
from tests.support.spans import as_span

RES_A = Resource({"service.name": "a", "process.pid": 1, "process.command_args": ["python", "x.py"]})
RES_B = Resource({"service.name": "b", "process.pid": 2, "f": 1.5, "ok": True})
SCOPE_A = InstrumentationScope("shop")
SCOPE_B = InstrumentationScope("db", "1.2", "https://schema")


def span(i, resource=RES_A, scope=SCOPE_A, **kw):
    ctx = SpanContext(0x0123456789ABCDEF0123456789ABCDEF + i, 0x1111 + i, False, TraceFlags(1))
    args = dict(name="op %d" % i, context=ctx, parent=None, resource=resource, attributes={},
                events=(), links=(), kind=SpanKind.INTERNAL, status=Status(StatusCode.UNSET),
                start_time=1_700_000_000_000_000_000 + i, end_time=1_700_000_000_000_500_000 + i,
                instrumentation_scope=scope)
    args.update(kw)
    return ReadableSpan(**args)


def encode_request(spans):
    return encode_ours([as_span(s) for s in spans])


VALUES = [0, 1, -1, 127, 128, 2**63 - 1, -2**63, 0.0, -0.0, 1e308, math.inf, -1.5, True, False, "", "é✓",
          "x" * 300, b"", b"\x00\xff" * 100, ["a", "b"], [1, 2, 3], [True], [1.5, -2.0], []]


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:20] for v in VALUES])
def test_attribute_values(value):
    spans = [span(0, attributes={"k": value, "dotted.key": value})]
    assert encode_request(spans) == encode_spans(spans).SerializeToString()


def test_full_spans_and_grouping():
    parent = SpanContext(0x0123456789ABCDEF0123456789ABCDEF, 0xFEED, False, TraceFlags(1))
    remote = SpanContext(0x0123456789ABCDEF0123456789ABCDEF, 0xBEEF, True, TraceFlags(1))
    spans = [
        span(1, parent=parent, kind=SpanKind.SERVER, attributes={"a": 1, "s": "x"},
             status=Status(StatusCode.ERROR, "ValueError: boom"),
             events=[Event("exception", {"exception.type": "ValueError"}, 1_700_000_000_000_100_000),
                     Event("note", {}, 1_700_000_000_000_200_000)]),
        span(2, resource=RES_B, scope=SCOPE_B, kind=SpanKind.CLIENT, parent=remote),
        span(3, kind=SpanKind.PRODUCER, status=Status(StatusCode.OK)),
        span(4, resource=RES_B, kind=SpanKind.CONSUMER,
             links=[Link(SpanContext(5, 6, True, TraceFlags(0)), {"l": 1})]),
        span(5, scope=SCOPE_B, name=""),
        span(6, context=SpanContext(7, 8, False, TraceFlags(1), TraceState([("k", "v"), ("k2", "v2")]))),
    ]
    assert encode_request(spans) == encode_spans(spans).SerializeToString()


def test_empty_batch():
    assert encode_request([]) == encode_spans([]).SerializeToString()


# --- events: OTLP log records ------------------------------------------------------------

def any_value(v) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, str):
        return AnyValue(string_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    return AnyValue(array_value=ArrayValue(values=[any_value(x) for x in v]))


def key_values(attributes):
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


def official_logs_request(events) -> bytes:
    """The same events as protobuf messages (opentelemetry-proto), grouped by resource then scope."""
    request = ExportLogsServiceRequest()
    groups = {}
    for e in events:
        rl = groups.get(id(e.resource))
        if rl is None:
            rl = groups[id(e.resource)] = (request.resource_logs.add(), {})
            rl[0].resource.attributes.extend(key_values(e.resource.attributes))
        sl = rl[1].get(id(e.instrumentation_scope))
        if sl is None:
            sl = rl[1][id(e.instrumentation_scope)] = rl[0].scope_logs.add()
            sl.scope.name = e.instrumentation_scope.name
            sl.scope.version = e.instrumentation_scope.version or ""
            sl.schema_url = e.instrumentation_scope.schema_url or ""
        sl.log_records.add(time_unix_nano=e.time, observed_time_unix_nano=e.time, attributes=key_values(e.attributes),
                           flags=e.trace_flags, trace_id=e.trace_id.to_bytes(16, "big") if e.trace_id else b"",
                           span_id=e.span_id.to_bytes(8, "big") if e.span_id else b"", event_name=e.event_name)
    return request.SerializeToString()


def log_event(i, resource=RES_A, scope=SCOPE_A, attrs=None, ids=True, name="simplehttp.file_transfer"):
    attributes = {"event.name": name}
    attributes.update(attrs or {"client": "127.0.0.1", "path": "/f%d" % i, "size": 1024 + i, "thread.id": 7})
    return LogEvent(name, 1_700_000_000_000_000_000 + i, 0xABC + i if ids else 0, 0x99 + i if ids else 0,
                    1 if ids else 0, attributes, resource, scope)


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:20] for v in VALUES])
def test_log_record_attribute_values(value):
    events = [log_event(0, attrs={"k": value})]
    assert encode_logs_request(events) == official_logs_request(events)


def test_log_records_with_and_without_ids_grouped():
    events = [log_event(1), log_event(2, ids=False), log_event(3, resource=RES_B, scope=SCOPE_B, name="é✓"),
              log_event(4, scope=SCOPE_B), log_event(5, resource=RES_B, ids=False)]
    assert encode_logs_request(events) == official_logs_request(events)
    assert encode_logs_request([]) == official_logs_request([]) == b""


def test_repeated_values_encode_alike_and_equal_values_of_other_types_do_not_mix():
    """Fields of repeated values come from a cache: 1, True and 1.0 are equal in Python, not on the wire."""
    spans = [span(i, attributes={"k": v, "s": "/same", "n": i}) for i, v in enumerate([1, True, 1.0, 1, "1", 1])]
    for _ in range(2):
        assert encode_request(spans) == encode_spans(spans).SerializeToString()
    events = [log_event(i, attrs={"k": v}) for i, v in enumerate([1, True, 1.0, "1", 1])]
    assert encode_logs_request(events) == official_logs_request(events)


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16383, 16384, 2**21 - 1, 2**21, 2**28, 2**63 - 1, -1, -2**63])
def test_integers_of_every_varint_length(n):
    spans = [span(0, attributes={"n": n})]
    assert encode_request(spans) == encode_spans(spans).SerializeToString()


def test_pre_encoded_spans_pass_through_among_the_tracers_own():
    """A span that arrives already encoded (an application's OpenTelemetry SDK span, as the otel_span
    probe role carries them) goes into the request as it is, grouped with the tracer's spans."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage

    from spanprobe_tracer.assemble.telemetry import EncodedSpan

    parent = SpanContext(0x0123456789ABCDEF0123456789ABCDEF, 0xFEED, True, TraceFlags(1))
    theirs = [span(7, kind=SpanKind.CLIENT, parent=parent, attributes={"a": 1, "l": [1.5]},
                   status=Status(StatusCode.ERROR, "bad"), events=[Event("e", {"k": "v"}, 1_700_000_000_000_000_001)]),
              span(8, resource=RES_B, scope=SCOPE_B)]
    ours = [span(1), span(2, resource=RES_B, scope=SCOPE_B)]
    bodies = [encode_spans([s]).resource_spans[0].scope_spans[0].spans[0].SerializeToString() for s in theirs]
    encoded = [EncodedSpan(b, s.resource, s.instrumentation_scope) for b, s in zip(bodies, theirs)]
    mixed = [as_span(ours[0]), encoded[0], as_span(ours[1]), encoded[1]]
    assert encode_ours(mixed) == encode_spans([ours[0], theirs[0], ours[1], theirs[1]]).SerializeToString()
    # Decoded for the console and JSON lines: the same span again, field by field.
    for e, s in zip(encoded, theirs):
        d = e.decoded()
        assert encode_ours([d]) == encode_spans([s]).SerializeToString()
        assert SpanMessage.FromString(e.body).name == d.name == s.name
