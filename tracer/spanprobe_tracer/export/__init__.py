"""Where telemetry leaves the tracer: exporters and the transports under them (``otlp``: OTLP/gRPC and OTLP/HTTP)."""
