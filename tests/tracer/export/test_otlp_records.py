"""Common span records straight to OTLP Span bytes (export.otlp.records) write exactly what the official
encoder writes for the span the usual path (careful decoder, SpanBuilder) makes of the same record; and
every record that is not common is left to the usual path."""

from __future__ import annotations

import math
import random

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

from spanprobe import Arg, ArgType as T, Provider
from spanprobe.abi.protocol import BYTES_TRUNCATED, END_ARGS, START_ARGS
from spanprobe_tracer.assemble import SpanBuilder
from spanprobe_tracer.assemble.telemetry import EncodedSpan, LogEvent
from spanprobe_tracer.decode import plan_decoders
from spanprobe_tracer.export.otlp.records import SpanRecordEncoder
from spanprobe_tracer.export.otlp.wire import encode_request
from spanprobe_tracer.kernel import CaptureConfig, ProviderPlan
from tests.support.fake_records import image_of, point_record, span_record, typed_provider

SM = 16
RESOURCE = Resource({"service.name": "typed", "process.pid": 100})
WALL = 1_700_000_000_000_000_000


def coded_provider() -> Provider:
    """A span with code.* attributes from its schema, one of them also a probe argument's name."""
    p = Provider("coded")
    p.declare("c_start", [*START_ARGS, Arg("code.line.number", T.I32), Arg("flag", T.BOOL)], "span_start")
    p.declare("c_end", [*END_ARGS, Arg("thread.id", T.U8)], "span_end")
    p.add_schema_span({"name": "coded op", "kind": "internal", "start": "c_start", "end": "c_end",
                       "code": {"function": "f", "filepath": "x.py", "lineno": 3}})
    return p


def setup(provider: Provider):
    plan = ProviderPlan(image_of(provider), CaptureConfig(string_max=SM))
    decoder = plan_decoders(plan)[plan.spans[0]]
    builder = SpanBuilder(lambda pid: RESOURCE, lambda ns: ns + WALL)
    return plan, decoder, builder, SpanRecordEncoder(decoder, builder)


def official(span) -> bytes:
    """The official encoder's request for one of the tracer's Spans (as the SDK's ReadableSpan)."""
    readable = ReadableSpan(name=span.name, context=span.context, parent=span.parent, resource=span.resource,
                            attributes=span.attributes, events=span.events, kind=span.kind, status=span.status,
                            start_time=span.start_time, end_time=span.end_time,
                            instrumentation_scope=span.instrumentation_scope)
    return encode_spans([readable]).SerializeToString()


def check(decoder, builder, encoder, rec) -> bool:
    """The fused bytes equal the official encoder's for the usual path's span; True if it was fused."""
    usual = decoder.decode_careful(rec, 100, 101)
    common = not usual.status and not usual.notes and not any(
        type(v) is str and k == "u64" and v.isdigit() for k, v in usual.attributes.items())
    fused = encoder.encode(rec, 100, 101)   # None: otherwise (not given) took it
    assert (fused is not None) == common
    if fused is None:
        return False
    span = builder.span(usual)
    assert fused.__class__ is EncodedSpan and fused.resource is span.resource
    assert fused.instrumentation_scope is span.instrumentation_scope and fused.trace_flags == span.trace_flags
    assert encode_request([fused]) == official(span)
    return True


def test_random_records_of_every_type_encode_as_the_official_encoder_does():
    """Values of every width and sign, texts at and past the capture length, non-ASCII and invalid UTF-8,
    failed reads and conversions, errors, sampled flags, roots and children."""
    plan, decoder, builder, encoder = setup(typed_provider())
    span = plan.spans[0]
    rng = random.Random(7)
    words = [0, 1, 0x7F, 0x80, 0xFF, 0x8000, 0xFFFF_FFFF, 2**63 - 1, 2**63, 2**64 - 1, 0xDEAD_BEEF_0000_0080]
    texts = ["", "a", "é✓", "x" * SM, "x" * (SM + 1), "é" * 9, "\x00 inside", b"\xff\xfe bad", b"ok\xc3"]
    fused = 0
    for _ in range(1000):
        start = [rng.getrandbits(64), rng.choice([0, rng.getrandbits(64)]), rng.getrandbits(64),
                 rng.getrandbits(64), rng.choice([0, 1]) | (rng.random() < 0.1) << (8 + rng.randrange(5))] + \
                [rng.choice(words) for _ in range(4)] + [rng.choice(texts)]
        raw = rng.choice([b"", b"\x00\x01", b"y" * (SM + 3), (b"z" * 5, BYTES_TRUNCATED)])
        end = [start[0], rng.choice([0, 0, 0, 0, 1, 2, 3, 4, 7]), rng.choice(texts), rng.choice(texts),
               1 | (rng.random() < 0.1) << (8 + rng.randrange(5)), rng.choice([0.0, -0.0, 1.5, math.inf, math.nan]),
               rng.choice(words), raw, rng.choice(words), rng.choice(words)]
        fails = [0, 0, 0, 0, 1 << rng.randrange(12)]
        rec = span_record(span, SM, start, end, start_ns=rng.randrange(1, 10**12), end_ns=10**12 + rng.randrange(9),
                          start_fail=rng.choice(fails), end_fail=rng.choice(fails))
        fused += check(decoder, builder, encoder, rec)
    assert fused > 50    # a fair share took the fused path (most draws here are not common)


@pytest.mark.parametrize("text", ["", "a" * SM, "é" * (SM // 2), "✓" * 5, "a" * (SM + 1), b"\xe2\x9c",
                                  b"a\xff" * (SM // 2)])
def test_texts_at_their_bounds(text):
    plan, decoder, builder, encoder = setup(typed_provider())
    rec = span_record(plan.spans[0], SM, [1, 2, 3, 4, 1, 0, 0, 0, 0, text], [1, 0, "", "", 1, 0.5, 1, b"", 0, 0])
    assert check(decoder, builder, encoder, rec) is (len(text) <= SM)


def test_code_attributes_and_names_given_twice():
    """code.* first (a probe argument of the same name keeps that place and gives the value), the probes'
    arguments, thread.id (the start thread's, even over an argument so named) last."""
    plan, decoder, builder, encoder = setup(coded_provider())
    for line, flag, tid in ((7, True, 5), (-1, False, 255), (2**31 - 1, True, 0)):
        rec = span_record(plan.spans[0], SM, [1, 0, 3, 4, 1, line, flag], [1, 0, "", "", 1, tid], tid=4242)
        assert check(decoder, builder, encoder, rec)
    span = builder.span(decoder.decode(rec, 100, 101))
    assert list(span.attributes)[:3] == ["code.function.name", "code.file.path", "code.line.number"]
    assert span.attributes["thread.id"] == 4242


def test_spans_with_something_waiting_go_the_usual_way():
    """An event naming the span, or a plain hit on its thread, must be joined by the builder."""
    plan, decoder, builder, encoder = setup(typed_provider())
    span = plan.spans[0]
    ev = next(p for p in plan.points if p.role == "event")
    plain = next(p for p in plan.points if p.role == "plain")
    decoders = plan_decoders(plan)
    rec = span_record(span, SM, [9, 0, 3, 4, 1, 0, 0, 0, 0, "s"], [9, 0, "", "", 1, 0.5, 1, b"", 0, 0], tid=101)
    assert encoder.encode(rec, 100, 101) is not None
    builder.point(decoders[ev].decode(point_record(ev, SM, [9, 3, 4, 1, "x", 1]), 100, 101))
    assert encoder.encode(rec, 100, 101) is None
    assert builder.span(decoder.decode(rec, 100, 101)).events      # the usual way takes the event
    assert encoder.encode(rec, 100, 101) is not None
    builder.point(decoders[plain].decode(point_record(plain, SM, [1, "y"], ts=1_500), 100, 101))
    assert encoder.encode(rec, 100, 101) is None
    builder.span(decoder.decode(rec, 100, 101))
    assert builder.take_events()[0].span_id == 9                     # the hit took the span's ids
    assert encoder.encode(rec, 100, 101) is not None


def test_a_drain_through_the_span_path_exports_what_the_usual_drain_exports():
    """The session's wiring (decode.Bindings' span_path, session.drain): the same records, drained with
    and without it, make the same OTLP request; common spans went straight to bytes."""
    from types import SimpleNamespace

    from spanprobe_tracer.decode import Bindings
    from spanprobe_tracer.export.otlp.records import span_path
    from spanprobe_tracer.session import Stats
    from spanprobe_tracer.session.drain import Drainer

    plan = ProviderPlan(image_of(typed_provider()), CaptureConfig(string_max=SM))
    span = plan.spans[0]
    ev = next(p for p in plan.points if p.role == "event")
    plain = next(p for p in plan.points if p.role == "plain")
    end = [0, 0, "", "", 1, 0.5, 1, b"", 0, 7]

    def span_rec(span_id, text="s", status=0, tid=101, start_ns=1_000, end_ns=2_000):
        return span_record(span, SM, [span_id, 1, 3, 4, 1, -1, 2, 3, 4, text], [span_id, status] + end[2:],
                           tid=tid, start_ns=start_ns, end_ns=end_ns)

    records = [span_rec(1), point_record(ev, SM, [2, 3, 4, 1, "x", 1], cookie=2), span_rec(2),
               point_record(plain, SM, [1, "y"], tid=105, ts=1_500, cookie=3), span_rec(3, tid=105),
               span_rec(4, status=1), span_rec(5, text="t" * (SM + 1))] + \
        [span_rec(10 + i, text="p%d" % i, tid=200 + i % 3, start_ns=i, end_ns=10**9 + i) for i in range(20)]
    requests, kinds = [], []
    for fused in (False, True):
        builder = SpanBuilder(lambda pid: RESOURCE, lambda ns: ns + WALL)
        bindings = Bindings(span_path(builder) if fused else None)
        decoders = plan_decoders(plan)
        assert [bindings.bind(decoders[t], 100) for t in (span, ev, plain)] == [1, 2, 3]
        out, stats = [], Stats()
        pipeline = SimpleNamespace(max_queue=10**6, queued=0, submit=out.extend)
        Drainer(None, bindings, builder, pipeline, stats, interval=0.1).process(records)
        assert stats.spans_received == 25 and stats.points_received == 2
        requests.append(encode_request([x for x in out if x.__class__ is not LogEvent]))
        kinds.append([x.__class__.__name__ for x in out])
    assert requests[0] == requests[1]
    assert kinds[1].count("EncodedSpan") == 21 and kinds[0].count("EncodedSpan") == 0
