"""Export: where spans leave the tracer.

    pipeline  ExportPipeline: a bounded queue and one export thread; every span exported or counted lost
    console   ConsoleExporter: traces as trees on a terminal, untrusted text escaped
    jsonl     JsonLinesExporter: one JSON object per span per line
    otlp      spanprobe's own OTLP client (gRPC and HTTP/protobuf, one encoder for both):
              OtlpSpanExporter to a collector; imported only when OTLP is asked for
    span_metrics  the kernel's span metrics as OTLP metrics (or console lines), sent from their own thread

Exporters are OpenTelemetry SDK SpanExporters fed ReadableSpans by the pipeline.
"""

from .console import ConsoleExporter
from .jsonl import JsonLinesExporter
from .pipeline import ExportPipeline

__all__ = ["ConsoleExporter", "JsonLinesExporter", "ExportPipeline"]
