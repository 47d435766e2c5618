"""TLS material from the settings: an ssl context for OTLP/HTTP, channel credentials for OTLP/gRPC.

Both are checked when the client is made, with Python's ssl module, so a file
that is not a certificate, or a client key that does not match its
certificate, is an error at start naming the flag or variable it came from,
not a handshake failure at the first export.
"""

from __future__ import annotations

import ssl

from ...errors import ExitStatus, TracerError
from .settings import OtlpSettings


def ssl_context(settings: OtlpSettings) -> ssl.SSLContext:
    """Verifies the server against the CERTIFICATE file (else the system's CAs), presents the client pair if given."""
    try:
        context = ssl.create_default_context(cafile=settings.certificate)
    except (ssl.SSLError, OSError) as exc:
        raise _error(settings, "certificate", "is not a PEM certificate file", exc) from None
    if settings.client_certificate:
        try:
            context.load_cert_chain(settings.client_certificate, settings.client_key)
        except (ssl.SSLError, OSError) as exc:
            raise _error(settings, "client_certificate", "and %s (%s) are not a matching PEM certificate and key"
                         % (settings.source("client_key"), settings.client_key), exc) from None
    return context


def grpc_credentials(settings: OtlpSettings):
    """grpc.ChannelCredentials from the same files (checked with ssl_context first)."""
    import grpc

    ssl_context(settings)

    def read(path):
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(root_certificates=read(settings.certificate),
                                        private_key=read(settings.client_key),
                                        certificate_chain=read(settings.client_certificate))


def _error(settings: OtlpSettings, option: str, problem: str, exc: Exception) -> TracerError:
    return TracerError("OTLP settings: %s (%s) %s: %s" % (settings.source(option), getattr(settings, option),
                                                         problem, getattr(exc, "reason", None) or exc),
                       ExitStatus.USAGE)
