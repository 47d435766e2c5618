"""otel_span payloads -> ReadableSpans: the application's OpenTelemetry API spans, as it made them.

The payload is an OTLP ``ScopeSpans`` holding one span (spanprobe.abi.otlp
wrote it in the application; docs/otel-mapping.md). Everything in it is
kept: ids, parent and its is-remote bit, W3C trace flags (bits 0-7 of
Span.flags), trace state, name, kind, the application's own start and end
times (wall clock), attributes of every type, events, links, status, dropped
counts, and the instrumentation scope. Only the resource is the tracer's:
the traced process's (assemble.resource).

Each span also keeps its OTLP encoding (``otlp_span``: protobuf's own
serialization of the payload's span, Span.flags as the official exporter
writes them), which export.otlp.wire sends as it is instead of encoding the
span again in Python.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

from google.protobuf.message import DecodeError
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from spanprobe.abi.otlp import FLAG_HAS_IS_REMOTE, FLAG_IS_REMOTE, KIND_OFFSET

from ..decode import OtelSpanRecord

_UNSET = Status(StatusCode.UNSET)


class BadPayload(ValueError):
    """An otel_span payload that is not one OTLP span."""


def any_value(v):
    """An OTLP AnyValue as the OpenTelemetry attribute value it encodes."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(any_value(x) for x in v.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def _attributes(kvs, dropped):
    attrs = {kv.key: any_value(kv.value) for kv in kvs}
    if not dropped:
        return attrs
    bounded = BoundedAttributes(attributes=attrs)
    bounded.dropped = dropped
    return bounded


def _bounded(items, dropped):
    if not dropped:
        return items
    out = BoundedList.from_seq(None, items)
    out.dropped = dropped
    return out


def _trace_state(header: str) -> Optional[TraceState]:
    return TraceState.from_header([header]) if header else None


class OtelSpanReader:
    """Builds ReadableSpans from otel_span records, with ``resource_for(pid)`` as their resource."""

    def __init__(self, resource_for: Callable[[int], Resource]):
        self._resource_for = resource_for
        self._scopes: Dict[Tuple, InstrumentationScope] = {}

    def _scope(self, s, schema_url: str) -> InstrumentationScope:
        key = (s.SerializeToString(), schema_url)  # one InstrumentationScope per distinct scope
        scope = self._scopes.get(key)
        if scope is None:
            attrs = {kv.key: any_value(kv.value) for kv in s.attributes} or None
            scope = self._scopes[key] = InstrumentationScope(s.name, s.version or None, schema_url or None, attrs)
        return scope

    def span(self, rec: OtelSpanRecord) -> ReadableSpan:
        """The span a record carries. Raises BadPayload when it is cut or is not one OTLP span."""
        if not rec.complete:
            raise BadPayload("the payload did not arrive whole")
        try:
            message = ScopeSpans.FromString(rec.payload)
        except DecodeError as exc:
            raise BadPayload("not an OTLP ScopeSpans: %s" % exc) from None
        if len(message.spans) != 1:
            raise BadPayload("%d spans in one payload" % len(message.spans))
        s = message.spans[0]
        try:
            trace_id = int.from_bytes(s.trace_id, "big")
            flags = TraceFlags(s.flags & 0xFF)
            state = _trace_state(s.trace_state)
            context = SpanContext(trace_id, int.from_bytes(s.span_id, "big"), False, flags, state)
            parent = (SpanContext(trace_id, int.from_bytes(s.parent_span_id, "big"), bool(s.flags & FLAG_IS_REMOTE),
                                  flags, state) if s.parent_span_id else None)
            events = [Event(e.name, _attributes(e.attributes, e.dropped_attributes_count), e.time_unix_nano)
                      for e in s.events]
            links = [Link(SpanContext(int.from_bytes(k.trace_id, "big"), int.from_bytes(k.span_id, "big"),
                                      bool(k.flags & FLAG_IS_REMOTE), TraceFlags(0), _trace_state(k.trace_state)),
                          _attributes(k.attributes, k.dropped_attributes_count))
                     for k in s.links]
            code = StatusCode(s.status.code)
            status = _UNSET if code is StatusCode.UNSET else Status(
                code, s.status.message if code is StatusCode.ERROR and s.status.message else None)
            kind = SpanKind(s.kind - KIND_OFFSET)
        except ValueError as exc:
            raise BadPayload(str(exc)) from None
        s.flags = FLAG_HAS_IS_REMOTE | (s.flags & FLAG_IS_REMOTE)  # what the official exporter writes
        span = ReadableSpan(
            name=s.name, context=context, parent=parent, resource=self._resource_for(rec.pid),
            attributes=_attributes(s.attributes, s.dropped_attributes_count),
            events=_bounded(events, s.dropped_events_count), links=_bounded(links, s.dropped_links_count),
            kind=kind, status=status, start_time=s.start_time_unix_nano, end_time=s.end_time_unix_nano,
            instrumentation_scope=self._scope(message.scope, message.schema_url))
        span.otlp_span = s.SerializeToString()
        return span
