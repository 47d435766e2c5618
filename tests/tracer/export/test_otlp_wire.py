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

from spanprobe_tracer.export.otlp.wire import encode_request as encode_ours
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
