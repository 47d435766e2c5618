"""Export: where spans leave the tracer.

    pipeline  ExportPipeline: a bounded queue and one export thread; every span exported or counted lost
    console   ConsoleExporter: traces as trees on a terminal, untrusted text escaped
    jsonl     JsonLinesExporter: one JSON object per span per line
    otlp      OTLP/gRPC and OTLP/HTTP to a collector (otlp.wire: the request encoder)

Exporters are OpenTelemetry SDK SpanExporters fed ReadableSpans by the pipeline.
"""

from .console import ConsoleExporter
from .jsonl import JsonLinesExporter
from .pipeline import ExportPipeline

__all__ = ["ConsoleExporter", "JsonLinesExporter", "ExportPipeline"]
