"""The tracer's own Span made from an OpenTelemetry SDK ReadableSpan, so that the official exporters and
ours can be given the same spans, field by field."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan

from spanprobe_tracer.assemble import Span


def as_span(r: ReadableSpan) -> Span:
    """The tracer's Span with the same fields as ``r``."""
    ctx = r.context
    return Span(r.name, ctx.trace_id, ctx.span_id, r.parent.span_id if r.parent else 0, int(ctx.trace_flags), r.kind,
                r.start_time, r.end_time, dict(r.attributes), list(r.events), r.status, r.resource,
                r.instrumentation_scope, list(r.links), ctx.trace_state, bool(r.parent and r.parent.is_remote))
