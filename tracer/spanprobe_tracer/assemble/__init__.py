"""Assemble: decoded records -> OpenTelemetry spans, on the wall clock, with each process's resource.

    telemetry Span: a finished span as the tracer exports it (flat fields, no SDK object per span)
    spans     SpanBuilder: span records, events joined to their spans, plain probes as spans
    otel      otel_span payloads (OTLP ScopeSpans) -> the application's OpenTelemetry API spans
    resource  process_resource(pid): service.name and process.* from /proc, as an in-process SDK would
    clock     WallClock: kernel CLOCK_BOOTTIME stamps -> epoch nanoseconds, re-anchored
"""

from .clock import WallClock
from .otel import ApiSpanSummary, BadPayload
from .resource import process_resource
from .spans import SpanBuilder
from .telemetry import Span

__all__ = ["ApiSpanSummary", "BadPayload", "WallClock", "process_resource", "SpanBuilder", "Span"]
