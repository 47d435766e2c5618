"""OTLP export to a collector, and spanprobe's own OTLP client (one transport for traces, metrics
and logs, fed request bytes).

    exporter        what the tracer exports with today: OtlpSettings (flags over
                    OTEL_EXPORTER_OTLP_*), check_reachable, make_otlp_exporter (the official exporters)
    wire            encode_request: ReadableSpans -> ExportTraceServiceRequest bytes, byte for byte
                    the official encoder's, about 3x faster
    settings        OTLP settings per signal from flags and OTEL_EXPORTER_OTLP_* (the spec's rules)
    signals         per-signal protocol facts, read from opentelemetry-proto's service descriptors
    tls             certificates and keys from the settings, as ssl contexts / gRPC credentials
    delivery        what became of an export (ExportResult) and the specification's retry loop
    grpc_client     OTLP/gRPC over grpcio: a generic unary call, request bytes sent as they are
    http_client     OTLP/HTTP (binary protobuf) over http.client, keep-alive
    client          the client a settings object asks for; the reachability check at start
    span_exporter   OtlpSpanExporter: the OpenTelemetry SDK SpanExporter over the client

The client's callers encode Export*ServiceRequest messages themselves (wire
for spans) and hand it bytes, so no protobuf object is built for a request.
"""

from .exporter import OtlpSettings, check_reachable, make_otlp_exporter

__all__ = ["OtlpSettings", "check_reachable", "make_otlp_exporter"]
