"""otel_span payloads -> EncodedSpans (assemble.otel), and what cannot be one is refused, to be counted."""

import json

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spanprobe_tracer.assemble import BadPayload
from spanprobe_tracer.assemble.otel import OtelSpanReader
from spanprobe_tracer.assemble.telemetry import EncodedSpan
from spanprobe_tracer.decode import OtelSpanRecord
from spanprobe_tracer.export.jsonl import SpanLines
from spanprobe_tracer.export.otlp.wire import encode_request, encode_span
from tests.support import otel_app
from tests.support.spans import as_span

RESOURCE = Resource({"service.name": "x"})


def sdk_spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel_app.scenario(provider.get_tracer("otel_app", "1.0", schema_url="https://s"))
    return exporter.get_finished_spans()


def record(payload, complete=True):
    return OtelSpanRecord(None, 1, 1, 0, payload, complete)


def payload_of(span) -> bytes:
    """The span as the SDK's otel_span payload carries it: a ScopeSpans, its W3C flags in Span.flags."""
    scope_spans = encode_spans([span]).resource_spans[0].scope_spans[0]
    scope_spans.spans[0].flags |= int(span.context.trace_flags)
    return scope_spans.SerializeToString()


def test_payload_round_trip_is_the_sdk_span():
    """Each SDK span, read from a payload, is encoded as the official exporter encodes it, and decodes
    (for the console and JSON lines) to the same span, trace flags and links included."""
    reader = OtelSpanReader(lambda pid: RESOURCE)
    for span in sdk_spans():
        rebuilt = reader.span(record(payload_of(span)))
        assert isinstance(rebuilt, EncodedSpan)
        assert encode_request([rebuilt]) == encode_request([as_span(span)]) == encode_spans([span]).SerializeToString()
        decoded = rebuilt.decoded()
        assert decoded.context.trace_flags == span.context.trace_flags
        assert encode_request([decoded]) == encode_spans([span]).SerializeToString()
        assert (decoded.instrumentation_scope.name, decoded.instrumentation_scope.version,
                decoded.instrumentation_scope.schema_url) == ("otel_app", "1.0", "https://s")


def test_scopes_are_shared_between_spans_of_one_scope():
    """The scope of the payload is the grouping key: one InstrumentationScope object per distinct scope."""
    reader = OtelSpanReader(lambda pid: RESOURCE)
    rebuilt = [reader.span(record(payload_of(s))) for s in sdk_spans()]
    assert len({id(s.instrumentation_scope) for s in rebuilt}) == 1


@pytest.mark.parametrize("payload, complete", [
    (b"\x0a\x02\x0a", True),   # not a ScopeSpans
    (b"", True),               # no span
    (b"\x12\x00", False),      # cut
    (b"\x12\x02\x30\x09", True),                  # kind 9: no such SpanKind
    (b"\x12\x04\x7a\x02\x18\x07", True),          # status code 7: no such StatusCode
])
def test_bad_payloads_are_refused(payload, complete):
    with pytest.raises(BadPayload):
        OtelSpanReader(lambda pid: RESOURCE).span(record(payload, complete))


def test_otlp_export_sends_the_payloads_span_as_it_is():
    """The request of the read spans is the official one, the Span bodies being the payloads' own."""
    reader = OtelSpanReader(lambda pid: RESOURCE)
    spans = sdk_spans()
    rebuilt = [reader.span(record(payload_of(span))) for span in spans]
    assert encode_request(rebuilt) == encode_spans(spans).SerializeToString()
    for s, span in zip(rebuilt, spans):  # and what the tracer's own encoder writes for the same span
        assert s.body == encode_span(as_span(span))


def test_jsonl_shows_links_and_map_values():
    """The JSON-lines exporter writes what the console and OTLP carry of an API span: links, map values."""
    reader = OtelSpanReader(lambda pid: RESOURCE)
    (linked,) = [s for s in sdk_spans() if s.links]
    rebuilt = reader.span(record(payload_of(linked)))
    lines = SpanLines()
    out = json.loads(lines(rebuilt))
    assert out["links"] == [{"trace_id": "%032x" % linked.links[0].context.trace_id,
                             "span_id": "%016x" % linked.links[0].context.span_id, "attributes": {"why": "batch"}}]
    assert out["trace_flags"] == int(linked.context.trace_flags)
    assert "links" not in json.loads(lines(as_span(sdk_spans()[0])))  # probe spans: no links field
    mapped = as_span(linked)
    mapped.links = []
    mapped.attributes = {"map": {"k": b"\x01", "n": [1, None]}, "nan": {"f": float("nan")}}
    assert json.loads(lines(mapped))["attributes"] == {"map": {"k": {"bytes_base64": "AQ=="}, "n": [1, None]},
                                                       "nan": {"f": "nan"}}
