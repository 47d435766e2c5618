"""OTLP export through the official OpenTelemetry exporters, with settings from flags and OTEL_* variables.

OtlpSettings resolves the endpoint, protocol, headers, timeout, compression
and TLS choice (command-line flags win over the standard
OTEL_EXPORTER_OTLP_* variables); ``check_reachable`` fails fast when nothing
listens there; ``make_otlp_exporter`` builds the official exporter for the
protocol. The gRPC one encodes with export.otlp.wire (see
_fast_grpc_exporter_class).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple
from urllib.parse import urlsplit

from opentelemetry.sdk.trace.export import SpanExporter

from ...errors import EndpointUnreachable, TracerError


PROTOCOLS = ("grpc", "http/protobuf")


@dataclass
class OtlpSettings:
    """OTLP settings: command-line flags win over the standard OTEL_EXPORTER_OTLP_* variables."""

    endpoint: Optional[str] = None
    protocol: Optional[str] = None
    headers: Dict[str, str] = field(default_factory=dict)
    timeout: Optional[float] = None
    compression: Optional[str] = None
    insecure: Optional[bool] = None

    def resolved_protocol(self, env=os.environ) -> str:
        protocol = (self.protocol or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip()
        if protocol not in PROTOCOLS:
            raise TracerError("OTLP protocol %r is not supported; use one of %s (http/json is not)"
                              % (protocol, ", ".join(PROTOCOLS)))
        return protocol

    def resolved_endpoint(self, env=os.environ) -> str:
        """The URL the exporter will use (with /v1/traces for HTTP)."""
        protocol = self.resolved_protocol(env)
        if protocol == "grpc":
            endpoint = (self.endpoint or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4317")
            return endpoint
        if self.endpoint:
            return _with_traces_path(self.endpoint)
        if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            return _with_traces_path(env["OTEL_EXPORTER_OTLP_ENDPOINT"], force=True)
        return "http://localhost:4318/v1/traces"

    def host_port(self, env=os.environ) -> Tuple[str, int]:
        endpoint = self.resolved_endpoint(env)
        protocol = self.resolved_protocol(env)
        parts = urlsplit(endpoint if "://" in endpoint else "//" + endpoint)
        default = 4317 if protocol == "grpc" else (443 if parts.scheme == "https" else 4318)
        try:
            port = parts.port or default
        except ValueError:
            raise TracerError("OTLP endpoint %r has an invalid port" % endpoint) from None
        if not parts.hostname:
            raise TracerError("OTLP endpoint %r names no host" % endpoint)
        return parts.hostname, port


def _with_traces_path(url: str, force: bool = False) -> str:
    """A base URL gets /v1/traces (as OTEL_EXPORTER_OTLP_ENDPOINT does); a full one is kept."""
    parts = urlsplit(url)
    if force or parts.path in ("", "/"):
        return url.rstrip("/") + "/v1/traces"
    return url


def check_reachable(settings: OtlpSettings, timeout: float = 3.0) -> None:
    """Fail fast (EndpointUnreachable) when nothing listens at the collector's address."""
    host, port = settings.host_port()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise EndpointUnreachable(
            "cannot reach the OTLP endpoint %s (%s:%d): %s. Start the collector, or point "
            "--otlp-endpoint / OTEL_EXPORTER_OTLP_ENDPOINT at it (--otlp-no-check starts anyway and "
            "counts what cannot be delivered)"
            % (settings.resolved_endpoint(), host, port, exc.strerror or exc)) from None


def _fast_grpc_exporter_class():
    """The official OTLP/gRPC exporter, encoding with otlp_wire instead of the official encoder.

    ``_translate_data`` is the exporter's hook for turning SDK spans into the
    request message; everything else (channel, TLS, headers, compression,
    retries with backoff, timeouts) is the official code. The request is
    parsed back into the official message type (C code, under 1 µs a span)
    because the gRPC stub serializes that type itself.
    """
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from .wire import encode_request

    class FastGrpcSpanExporter(OTLPSpanExporter):
        def _translate_data(self, data):
            return ExportTraceServiceRequest.FromString(encode_request(data))

    return FastGrpcSpanExporter


def make_otlp_exporter(settings: OtlpSettings) -> SpanExporter:
    """The official OTLP span exporter for the configured protocol."""
    protocol = settings.resolved_protocol()
    endpoint = settings.resolved_endpoint()
    kwargs: dict = {"endpoint": endpoint}
    if settings.headers:
        kwargs["headers"] = dict(settings.headers)
    if settings.timeout is not None:
        kwargs["timeout"] = settings.timeout
    compression = (settings.compression or "").strip().lower() or None
    if protocol == "grpc":
        OTLPSpanExporter = _fast_grpc_exporter_class()
        if compression is not None:
            import grpc
            try:
                kwargs["compression"] = {"gzip": grpc.Compression.Gzip, "none": grpc.Compression.NoCompression,
                                         "deflate": grpc.Compression.Deflate}[compression]
            except KeyError:
                raise TracerError("OTLP compression %r is not supported (gzip, deflate, none)" % compression) from None
        insecure = settings.insecure
        if insecure is None and endpoint.startswith("http://"):
            insecure = True
        if insecure is not None:
            kwargs["insecure"] = insecure
        return OTLPSpanExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    if compression is not None:
        try:
            kwargs["compression"] = {"gzip": Compression.Gzip, "deflate": Compression.Deflate,
                                     "none": Compression.NoCompression}[compression]
        except KeyError:
            raise TracerError("OTLP compression %r is not supported (gzip, deflate, none)" % compression) from None
    return HttpExporter(**kwargs)
