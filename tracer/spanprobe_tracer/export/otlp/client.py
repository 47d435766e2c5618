"""The OTLP client a settings object asks for, and the check at start that something listens there.

A client has ``export(body: bytes, items: int) -> ExportResult`` (one encoded
Export*ServiceRequest of its signal, retried as the OTLP specification says)
and ``shutdown()``; GrpcClient and HttpClient are the two.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Union

from ...errors import EndpointUnreachable
from .delivery import Backoff
from .settings import OtlpSettings

if TYPE_CHECKING:
    from .grpc_client import GrpcClient
    from .http_client import HttpClient


def make_client(settings: OtlpSettings, backoff: Backoff = Backoff()) -> "Union[GrpcClient, HttpClient]":
    """A client for ``settings.protocol``; TracerError if its TLS files do not load. grpcio is
    imported only for a gRPC client (it takes a while)."""
    if settings.protocol == "grpc":
        from .grpc_client import GrpcClient
        return GrpcClient(settings, backoff)
    from .http_client import HttpClient
    return HttpClient(settings, backoff)


def check_reachable(settings: OtlpSettings, timeout: float = 3.0) -> None:
    """Fail fast (EndpointUnreachable) when nothing accepts connections at the collector's address."""
    if settings.host:
        address, family, shown = (settings.host, settings.port), None, "%s:%d" % (settings.host, settings.port)
    else:  # a unix: gRPC target
        path = settings.endpoint[len("unix:"):]
        address, family, shown = (path[2:] if path.startswith("//") else path), socket.AF_UNIX, settings.endpoint
    try:
        if family is None:
            socket.create_connection(address, timeout=timeout).close()
        else:
            with socket.socket(family) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
    except OSError as exc:
        raise EndpointUnreachable(
            "cannot reach the OTLP endpoint %s (%s, from %s): %s. Start the collector, or point "
            "--otlp-endpoint / OTEL_EXPORTER_OTLP_ENDPOINT at it (--otlp-no-check starts anyway and "
            "counts what cannot be delivered)"
            % (settings.endpoint, shown, settings.source("endpoint"), exc.strerror or exc)) from None
