"""spanprobe's own OTLP client: one transport for traces, metrics and logs, fed request bytes.

    settings        OTLP settings per signal from flags and OTEL_EXPORTER_OTLP_* (the spec's rules)
    signals         per-signal protocol facts, read from opentelemetry-proto's service descriptors
    tls             certificates and keys from the settings, as ssl contexts / gRPC credentials
    delivery        what became of an export (ExportResult) and the specification's retry loop
    grpc_client     OTLP/gRPC over grpcio: a generic unary call, request bytes sent as they are
    http_client     OTLP/HTTP (binary protobuf) over http.client, keep-alive
    client          the client a settings object asks for; the reachability check at start
    wire            encode_request: Spans -> ExportTraceServiceRequest bytes (byte for
                    byte the official encoder's, about 5x faster)
    records         common span records straight to OTLP Span bytes (no Span object), when
                    OTLP is the only span exporter (byte for byte what wire writes)
    span_exporter   OtlpSpanExporter: the OpenTelemetry SDK SpanExporter over the client

Callers encode Export*ServiceRequest messages themselves (wire for spans) and
hand the client bytes, so no protobuf object is built for a request. Nothing
is imported here: grpcio and the protobuf descriptors load only when OTLP is
used (`spanprobe list` and `--help` never pay for them).
"""
