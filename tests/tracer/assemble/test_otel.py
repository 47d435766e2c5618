"""otel_span payloads -> ReadableSpans (assemble.otel), and what cannot be one is refused, to be counted."""

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spanprobe_tracer.assemble import BadPayload
from spanprobe_tracer.assemble.otel import OtelSpanReader
from spanprobe_tracer.decode import OtelSpanRecord
from spanprobe_tracer.export.otlp.wire import encode_request
from tests.support import otel_app

RESOURCE = Resource({"service.name": "x"})


def sdk_spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel_app.scenario(provider.get_tracer("otel_app", "1.0", schema_url="https://s"))
    return exporter.get_finished_spans()


def record(payload, complete=True):
    return OtelSpanRecord(None, 1, 1, 0, payload, complete)


def test_payload_round_trip_is_the_sdk_span():
    """Each SDK span, encoded as a payload would be, comes back as a span the exporter encodes identically."""
    reader = OtelSpanReader(lambda pid: RESOURCE)
    for span in sdk_spans():
        scope_spans = encode_spans([span]).resource_spans[0].scope_spans[0]
        scope_spans.spans[0].flags |= int(span.context.trace_flags)  # the payload's flags carry them
        rebuilt = reader.span(record(scope_spans.SerializeToString()))
        assert encode_request([rebuilt]) == encode_request([span])
        assert rebuilt.context.trace_flags == span.context.trace_flags


@pytest.mark.parametrize("payload, complete", [(b"\x0a\x02\x0a", True), (b"", True), (b"\x12\x00", False)])
def test_bad_payloads_are_refused(payload, complete):
    with pytest.raises(BadPayload):
        OtelSpanReader(lambda pid: RESOURCE).span(record(payload, complete))


def test_otlp_export_sends_the_payloads_span_as_it_is():
    """The rebuilt span carries its encoding, and the exporter's request is the official one with it."""
    reader = OtelSpanReader(lambda pid: RESOURCE)
    spans = sdk_spans()
    rebuilt = []
    for span in spans:
        scope_spans = encode_spans([span]).resource_spans[0].scope_spans[0]
        scope_spans.spans[0].flags |= int(span.context.trace_flags)
        rebuilt.append(reader.span(record(scope_spans.SerializeToString())))
    assert all(isinstance(s.otlp_span, bytes) for s in rebuilt)
    assert encode_request(rebuilt) == encode_spans(spans).SerializeToString()
    for s in rebuilt:  # and what the Python encoder would write, field for field
        assert s.otlp_span == encode_request_span_body(s)


def encode_request_span_body(span):
    from spanprobe_tracer.export.otlp import wire

    del span.otlp_span
    return wire.encode_span(span)


def test_jsonl_shows_links_and_map_values():
    """The JSON-lines exporter writes what the console and OTLP carry of an API span: links, map values."""
    import json

    from spanprobe_tracer.export.jsonl import span_to_dict

    reader = OtelSpanReader(lambda pid: RESOURCE)
    (linked,) = [s for s in sdk_spans() if s.links]
    scope_spans = encode_spans([linked]).resource_spans[0].scope_spans[0]
    rebuilt = reader.span(record(scope_spans.SerializeToString()))
    out = json.loads(json.dumps(span_to_dict(rebuilt)))
    assert out["links"] == [{"trace_id": "%032x" % linked.links[0].context.trace_id,
                             "span_id": "%016x" % linked.links[0].context.span_id, "attributes": {"why": "batch"}}]
    mapped = ReadableSpan(name="m", context=rebuilt.context, attributes={"map": {"k": b"\x01", "n": [1, None]}})
    assert json.loads(json.dumps(span_to_dict(mapped)))["attributes"]["map"] == {
        "k": {"bytes_base64": "AQ=="}, "n": [1, None]}
