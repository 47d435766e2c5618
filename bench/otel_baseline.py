"""The in-process OpenTelemetry SDK baseline the benchmarks compare spanprobe with.

A TracerProvider with a BatchSpanProcessor, as an application would set one
up, whose exporter accepts and drops every batch: what is measured is the
cost of making spans in the application, not of shipping them.
"""

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class DropExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


def otel_tracer(name):
    """(tracer, provider): call provider.shutdown() when done."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    return provider.get_tracer(name), provider
