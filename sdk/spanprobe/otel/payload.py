"""A finished span as the otel_span probe's argument: OTLP ScopeSpans bytes within MAX_BYTES.

A span that does not fit the probe's bound (spanprobe.abi.protocol.MAX_BYTES)
is cut, each cut counted where OTLP counts it, in this order until it fits:

1. ``exception.stacktrace`` values keep their end (the innermost frames and
   the exception line) behind a marker saying how many characters were cut;
2. events, oldest first (``dropped_events_count``);
3. span attributes, oldest first (``dropped_attributes_count``);
4. links, oldest first (``dropped_links_count``);
5. the span name and the scope's strings, cut to NAME_CAP characters.

Never raises: a value OTLP cannot carry (an int beyond int64) is left out
with a warning, as the official encoder does.
"""

import logging

from ..abi import otlp
from ..abi.protocol import MAX_BYTES

log = logging.getLogger("spanprobe.otel")

STACKTRACE = "exception.stacktrace"
#: What replaces the cut head of a stack trace ({} is the number of characters cut).
CUT_MARKER = "[spanprobe: {} characters of this stack trace cut to fit the probe]\n"
NAME_CAP = 256


def key_values(attributes):
    """Encoded KeyValues of a mapping, skipping (with a warning) values OTLP cannot carry."""
    out = []
    for key, value in attributes.items():
        try:
            out.append(otlp.key_value(key, value))
        except ValueError as exc:
            log.warning("spanprobe: attribute %r left out of the span: %s", key, exc)
    return out


def _event(ev, stack_cut=None):
    name, attrs, dropped, ts = ev
    if stack_cut is not None:
        attrs = dict(attrs)
        attrs[STACKTRACE] = stack_cut
    return otlp.event(ts, name, key_values(attrs), dropped)


def _scope(span):
    name, version, schema_url, attrs = span.scope
    return name, version, schema_url, key_values(attrs) if attrs else ()


def encode(span):
    """The probe argument for ``span`` (a spanprobe.otel.span.Span that has ended)."""
    attrs = key_values(span.attributes.items)
    events = [_event(ev) for ev in span.events]
    links = [otlp.link(ctx.trace_id, ctx.span_id, ctx.trace_state.to_header(), key_values(a.items), a.dropped,
                       otlp.FLAG_HAS_IS_REMOTE | (otlp.FLAG_IS_REMOTE if ctx.is_remote else 0))
             for ctx, a in span.links]
    cut = Cut(span, attrs, events, links)
    data = cut.encode()
    if len(data) > MAX_BYTES:
        data = cut.shrink(len(data) - MAX_BYTES)
    return data


class Cut:
    """One span's encoded pieces, and what was cut from them to fit."""

    def __init__(self, span, attrs, events, links):
        self.span = span
        self.attrs, self.events, self.links = attrs, events, links
        self.dropped_attrs = span.attributes.dropped
        self.dropped_events = span.dropped_events
        self.dropped_links = span.dropped_links
        self.name = span.name
        self.scope = _scope(span)

    def encode(self):
        s = self.span
        ctx = s.context
        parent = s.parent
        flags = int(ctx.trace_flags) | otlp.FLAG_HAS_IS_REMOTE
        if parent is not None and parent.is_remote:
            flags |= otlp.FLAG_IS_REMOTE
        body = otlp.span(
            trace_id=ctx.trace_id, span_id=ctx.span_id, trace_state=ctx.trace_state.to_header(),
            parent_span_id=parent.span_id if parent is not None else 0, name=self.name,
            kind=s.kind.value + otlp.KIND_OFFSET, start=s.start_time, end=s.end_time,
            attributes=self.attrs, dropped_attributes=self.dropped_attrs,
            events=self.events, dropped_events=self.dropped_events,
            links=self.links, dropped_links=self.dropped_links,
            status_message=otlp.status(s.status_code, s.status_description), flags=flags)
        name, version, schema_url, scope_attrs = self.scope
        return otlp.scope_spans(otlp.scope(name, version, scope_attrs), [body], schema_url)

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
            name, version, schema_url, scope_attrs = self.scope
            self.name = self.name[:NAME_CAP]
            self.scope = (name[:NAME_CAP], version and version[:NAME_CAP], schema_url and schema_url[:NAME_CAP],
                          [])
            data = self.encode()
        return data

    def _cut_stacktraces(self, excess):
        for i, ev in enumerate(self.span.events):
            text = ev[1].get(STACKTRACE)
            if not isinstance(text, str) or excess <= 0:
                continue
            # Characters, not bytes: cut enough for any UTF-8 width, plus room for the marker.
            remove = min(len(text), excess + len(CUT_MARKER) + 24)
            kept = CUT_MARKER.format(remove) + text[remove:]
            before = len(self.events[i])
            self.events[i] = _event(ev, kept)
            excess -= before - len(self.events[i])
        return self.encode()
