"""A finished span as the otel_span probe's argument: OTLP ScopeSpans bytes within MAX_BYTES.

A span that does not fit the probe's bound (spanprobe.abi.protocol.MAX_BYTES)
is cut, each cut counted where OTLP counts it, in this order until it fits:

1. ``exception.stacktrace`` values keep their end (the innermost frames and
   the exception line) behind a marker saying how many characters were cut;
2. events, oldest first (``dropped_events_count``);
3. span attributes, oldest first (``dropped_attributes_count``);
4. links, oldest first (``dropped_links_count``);
5. the span name and the scope's name and version, cut to NAME_CAP characters.

Never raises: an attribute OTLP cannot carry (an int beyond int64, a key or a
str value with a lone surrogate, which UTF-8 cannot encode) is left out with
a warning, as the official encoder does.
"""

import logging

from opentelemetry.trace import SpanKind
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from ..abi import otlp
from ..abi.protocol import MAX_BYTES

log = logging.getLogger("spanprobe.otel")

STACKTRACE = "exception.stacktrace"
#: What replaces the cut head of a stack trace ({} is the number of characters cut).
CUT_MARKER = "[spanprobe: {} characters of this stack trace cut to fit the probe]\n"
NAME_CAP = 256


def left_out(key, exc):
    """Warn of an attribute value OTLP cannot carry, left out of the encoding as the official encoder does."""
    log.warning("spanprobe: attribute %r left out of the span: %s", key, exc)


def scope_parts(scope):
    """The ScopeSpans head and tail of a tracer's ``(name, version, schema_url, attributes)``."""
    name, version, schema_url, attrs = scope
    message = otlp.scope(name, version, otlp.key_value_fields(otlp.SCOPE_ATTRIBUTES, attrs, left_out))
    return otlp.scope_spans_head(message), otlp.scope_spans_tail(schema_url)


#: Span.kind by the SpanKind member's identity (Enum members hash in Python, ~50 ns a span);
#: anything else raises KeyError, as a lookup by the member does.
_KIND = {id(kind): kind.value + otlp.KIND_OFFSET for kind in SpanKind}


def _link(context, attrs):
    return otlp.length_delimited(otlp.SPAN_LINKS, otlp.link(
        context.trace_id, context.span_id, context.trace_state.to_header(),
        otlp.key_value_fields(otlp.LINK_ATTRIBUTES, attrs.items, left_out), attrs.dropped,
        otlp.FLAG_HAS_IS_REMOTE | (otlp.FLAG_IS_REMOTE if context.is_remote else 0)))


def encode(span):
    """The probe argument for ``span`` (a spanprobe.otel.span.Span that has ended)."""
    attrs = span.attributes
    events = span.events
    links = span.links
    data = _encode(span, span.name,
                   otlp.key_value_fields(otlp.SPAN_ATTRIBUTES, attrs.items, left_out) if attrs.items else b"",
                   attrs.dropped, b"".join([ev[4] for ev in events]) if events else b"", span.dropped_events,
                   b"".join([_link(*link) for link in links]) if links else b"", span.dropped_links,
                   span.tracer.scope_head)
    if len(data) > MAX_BYTES:
        data = Cut(span).shrink(len(data) - MAX_BYTES)
    return data


def _encode(span, name, attrs, dropped_attrs, events, dropped_events, links, dropped_links, scope_head):
    ctx = span.context
    parent = span.parent
    flags = ctx.trace_flags | otlp.FLAG_HAS_IS_REMOTE
    if parent is not None and parent.is_remote:
        flags |= otlp.FLAG_IS_REMOTE
    code = span.status_code
    trace_state = ctx.trace_state
    return otlp.scope_span(  # positional: keyword calls cost more, and this runs for every span
        scope_head, span.tracer.scope_tail, ctx.trace_id, ctx.span_id,
        trace_state.to_header() if trace_state is not DEFAULT_TRACE_STATE and trace_state else "",
        parent.span_id if parent is not None else 0, name, _KIND[id(span.kind)], span.start_time, span.end_time,
        attrs, dropped_attrs, events, dropped_events, links, dropped_links,
        otlp.status_field(code, span.status_description) if code else otlp.NO_STATUS, flags)


class Cut:
    """One span's encoded pieces, and what was cut from them to fit."""

    def __init__(self, span):
        self.span = span
        one = [otlp.key_value_fields(otlp.SPAN_ATTRIBUTES, {k: v}, left_out) for k, v in span.attributes.items.items()]
        self.attrs = [field for field in one if field]
        self.events = [ev[4] for ev in span.events]
        self.links = [_link(*link) for link in span.links]
        self.dropped_attrs = span.attributes.dropped
        self.dropped_events = span.dropped_events
        self.dropped_links = span.dropped_links
        self.name = span.name
        self.scope_head = span.tracer.scope_head

    def encode(self):
        return _encode(self.span, self.name, b"".join(self.attrs), self.dropped_attrs, b"".join(self.events),
                       self.dropped_events, b"".join(self.links), self.dropped_links, self.scope_head)

    def shrink(self, excess):
        """Cut in the documented order until the encoding fits; returns it."""
        data = self._cut_stacktraces(excess)
        for pieces, counter in ((self.events, "dropped_events"), (self.attrs, "dropped_attrs"),
                                (self.links, "dropped_links")):
            while len(data) > MAX_BYTES and pieces:
                del pieces[0]
                setattr(self, counter, getattr(self, counter) + 1)
                data = self.encode()
        if len(data) > MAX_BYTES:
            name, version, _, _ = self.span.tracer.scope
            self.name = self.name[:NAME_CAP]
            self.scope_head = otlp.scope_spans_head(otlp.scope(name[:NAME_CAP], version and version[:NAME_CAP]))
            data = self.encode()
        return data

    def _cut_stacktraces(self, excess):
        for i, (name, attrs, dropped, ts, field) in enumerate(self.span.events):
            text = attrs.get(STACKTRACE)
            if not isinstance(text, str) or excess <= 0:
                continue
            # Characters, not bytes: cut enough for any UTF-8 width, plus room for the marker.
            remove = min(len(text), excess + len(CUT_MARKER) + 24)
            attrs = dict(attrs)
            attrs[STACKTRACE] = CUT_MARKER.format(remove) + text[remove:]
            self.events[i] = otlp.event_field(ts, name, attrs, dropped, left_out)
            excess -= len(field) - len(self.events[i])
        return self.encode()
