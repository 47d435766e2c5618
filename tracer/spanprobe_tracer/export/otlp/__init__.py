"""OTLP export to a collector.

    exporter  OtlpSettings (flags over OTEL_EXPORTER_OTLP_*), check_reachable, make_otlp_exporter
    wire      encode_request: ReadableSpans -> ExportTraceServiceRequest bytes, byte for byte the
              official encoder's, about 3x faster
"""

from .exporter import OtlpSettings, check_reachable, make_otlp_exporter

__all__ = ["OtlpSettings", "check_reachable", "make_otlp_exporter"]
