"""What leaves the tracer: finished spans and events (log records), as light records of our own.

The tracer builds one of these per span at up to 100,000 spans/s, so they are
plain slotted objects with flat fields (ids as integers, times as epoch
nanoseconds), not OpenTelemetry SDK ReadableSpans: those cost ~2 µs each in
SpanContexts and checks the tracer does not need. The shared, per-process or
per-type parts are SDK objects made once (Resource, InstrumentationScope,
SpanKind, Status), so exporters read a Span as they would a ReadableSpan;
``context`` and ``parent`` make SpanContexts on demand, for readers off the
hot path (console, tests).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from spanprobe.abi.otlp import FLAG_IS_REMOTE, KIND_OFFSET

UNSET = Status(StatusCode.UNSET)


class Span:
    """One finished span: ids, times (epoch ns), attributes, events, status, resource and scope."""

    __slots__ = ("name", "trace_id", "span_id", "parent_id", "trace_flags", "kind", "start_time", "end_time",
                 "attributes", "events", "status", "resource", "instrumentation_scope", "links", "trace_state",
                 "parent_is_remote")

    def __init__(self, name: str, trace_id: int, span_id: int, parent_id: int, trace_flags: int, kind: SpanKind,
                 start_time: int, end_time: int, attributes: Dict[str, Any], events: Sequence, status: Status,
                 resource: Resource, instrumentation_scope: Optional[InstrumentationScope],
                 links: Sequence[Link] = (), trace_state: Optional[TraceState] = None,
                 parent_is_remote: bool = False):
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id          # 0: a root span
        self.trace_flags = trace_flags
        self.kind = kind
        self.start_time = start_time
        self.end_time = end_time
        self.attributes = attributes
        self.events = events                # opentelemetry.sdk.trace.Event objects
        self.status = status
        self.resource = resource
        self.instrumentation_scope = instrumentation_scope
        self.links = links
        self.trace_state = trace_state
        self.parent_is_remote = parent_is_remote

    @property
    def context(self) -> SpanContext:
        return SpanContext(self.trace_id, self.span_id, False, TraceFlags(self.trace_flags), self.trace_state)

    @property
    def parent(self) -> Optional[SpanContext]:
        if not self.parent_id:
            return None
        return SpanContext(self.trace_id, self.parent_id, self.parent_is_remote, TraceFlags(self.trace_flags))

    def __repr__(self):
        return "Span(%r, trace_id=%032x, span_id=%016x)" % (self.name, self.trace_id, self.span_id)


class LogEvent:
    """One OpenTelemetry event, exported as an OTLP log record: a plain probe hit, or an event probe hit
    whose span the tracer never got. ``event_name`` goes out as the record's event_name and as its
    ``event.name`` attribute; ``trace_id``/``span_id`` are those of the span it fired in (0: none)."""

    __slots__ = ("event_name", "time", "trace_id", "span_id", "trace_flags", "attributes", "resource",
                 "instrumentation_scope")

    def __init__(self, event_name: str, time: int, trace_id: int, span_id: int, trace_flags: int,
                 attributes: Dict[str, Any], resource: Resource, instrumentation_scope: InstrumentationScope):
        self.event_name = event_name
        self.time = time                    # epoch ns, from the kernel's clock
        self.trace_id = trace_id
        self.span_id = span_id
        self.trace_flags = trace_flags
        self.attributes = attributes        # event.name first, then the probe's arguments
        self.resource = resource
        self.instrumentation_scope = instrumentation_scope

    def __repr__(self):
        return "LogEvent(%r, trace_id=%032x, span_id=%016x)" % (self.event_name, self.trace_id, self.span_id)


class EncodedSpan:
    """A span that arrives already encoded as an OTLP ``Span`` message (the otel_span role's: an
    application's OpenTelemetry API span, assemble.otel), with the resource and scope it belongs to.
    The OTLP encoder passes ``body`` through as it is; ``decoded()`` makes a Span of it for the console
    and JSON lines. ``trace_flags``: the W3C flags, which the official encoder leaves out of Span.flags."""

    __slots__ = ("body", "resource", "instrumentation_scope", "trace_flags")

    def __init__(self, body: bytes, resource: Resource, instrumentation_scope: InstrumentationScope,
                 trace_flags: int = 0):
        self.body = body
        self.resource = resource
        self.instrumentation_scope = instrumentation_scope
        self.trace_flags = trace_flags

    def decoded(self) -> Span:
        from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage
        from opentelemetry.sdk.trace import Event

        m = SpanMessage.FromString(self.body)
        code = StatusCode(m.status.code)
        status = UNSET if code is StatusCode.UNSET else Status(
            code, m.status.message if code is StatusCode.ERROR and m.status.message else None)
        links = [Link(SpanContext(int.from_bytes(k.trace_id, "big"), int.from_bytes(k.span_id, "big"),
                                  bool(k.flags & FLAG_IS_REMOTE), TraceFlags(0), trace_state(k.trace_state)),
                      attributes(k.attributes))
                 for k in m.links]
        return Span(m.name, int.from_bytes(m.trace_id, "big"), int.from_bytes(m.span_id, "big"),
                    int.from_bytes(m.parent_span_id, "big"), self.trace_flags, SpanKind(m.kind - KIND_OFFSET),
                    m.start_time_unix_nano, m.end_time_unix_nano, attributes(m.attributes),
                    [Event(e.name, attributes(e.attributes), e.time_unix_nano) for e in m.events], status,
                    self.resource, self.instrumentation_scope, links, trace_state(m.trace_state),
                    bool(m.flags & FLAG_IS_REMOTE))


def trace_state(header: str) -> Optional[TraceState]:
    """A W3C tracestate header as a TraceState (None when empty)."""
    return TraceState.from_header([header]) if header else None


def attributes(key_values) -> Dict[str, Any]:
    """OTLP KeyValues as OpenTelemetry attributes."""
    return {kv.key: any_value(kv.value) for kv in key_values}


def any_value(v):
    """An OTLP AnyValue as the OpenTelemetry attribute value it encodes (a map value as a dict)."""
    which = v.WhichOneof("value")
    if which == "array_value":
        return tuple(any_value(x) for x in v.array_value.values)
    if which == "kvlist_value":
        return attributes(v.kvlist_value.values)
    return getattr(v, which) if which else None
