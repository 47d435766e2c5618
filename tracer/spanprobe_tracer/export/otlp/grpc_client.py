"""OTLP/gRPC over grpcio: the caller's request bytes go out as they are, on one channel per client.

The call is grpcio's generic unary call on the method the official service
descriptor names, with no request serializer, so no protobuf object is built
for a request; only the small response is parsed (the official message type).

Retryable codes are the OTLP specification's table; RESOURCE_EXHAUSTED only
when the server attaches a RetryInfo, whose delay is honoured (for any code).
RetryInfo is read where gRPC servers put status details: the
``grpc-status-details-bin`` trailer, a google.rpc.Status (the official Python
exporter looks for a ``google.rpc.retryinfo-bin`` trailer, which servers such
as the Collector do not send).
"""

from __future__ import annotations

import threading
from typing import Optional, Union

import grpc
from google.rpc import error_details_pb2, status_pb2

from . import tls
from .delivery import Backoff, ExportResult, Transient, deliver
from .settings import USER_AGENT, OtlpSettings
from .signals import SIGNALS

RETRYABLE = frozenset({grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
                       grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})
_STATUS_DETAILS = "grpc-status-details-bin"

_CHANNEL_OPTIONS = (
    ("grpc.primary_user_agent", USER_AGENT),
    # A channel that lost its collector reconnects on its own schedule, up to 120 s apart by
    # default: calls made in between fail at once. Cap it near our own backoff.
    ("grpc.max_reconnect_backoff_ms", 5000),
)


def retry_delay(trailing_metadata) -> Optional[float]:
    """The RetryInfo delay in the call's status details, in seconds (None: none given)."""
    for key, value in trailing_metadata or ():
        if key != _STATUS_DETAILS:
            continue
        try:
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
        except Exception:  # a malformed trailer only costs us the server's hint
            return None
    return None


class GrpcClient:
    """Export*ServiceRequest bytes of one signal to an OTLP/gRPC server."""

    def __init__(self, settings: OtlpSettings, backoff: Backoff = Backoff()):
        signal = SIGNALS[settings.signal]
        self.settings = settings
        self._backoff = backoff
        self._stop = threading.Event()
        if settings.secure:
            self._channel = grpc.secure_channel(settings.grpc_target, tls.grpc_credentials(settings),
                                                options=_CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(settings.grpc_target, options=_CHANNEL_OPTIONS)
        self._call = self._channel.unary_unary(signal.grpc_method, request_serializer=None,
                                               response_deserializer=signal.response.FromString)
        self._rejected_field = signal.rejected_field
        self._metadata = settings.headers or None
        self._compression = grpc.Compression.Gzip if settings.compression == "gzip" else grpc.Compression.NoCompression

    def export(self, body: bytes, items: int) -> ExportResult:
        """Send one encoded request (``items``: the spans, points or records in it), retrying as the spec says."""
        if self._stop.is_set():
            return ExportResult(False, items, status="shutdown", message="the client is shut down", attempts=0)
        return deliver(lambda remaining: self._attempt(body, items, remaining), items, self.settings.timeout,
                       self._backoff, self._stop)

    def _attempt(self, body: bytes, items: int, remaining: Optional[float]) -> Union[ExportResult, Transient]:
        try:
            response = self._call(body, timeout=remaining, metadata=self._metadata, compression=self._compression)
        except grpc.RpcError as error:
            code, details = error.code(), error.details() or ""
            delay = retry_delay(error.trailing_metadata())
            if code in RETRYABLE or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None):
                return Transient(code.name, details, delay)
            return ExportResult(False, items, status=code.name, message=details)
        except ValueError:  # "Cannot invoke RPC on closed channel": shut down meanwhile
            return ExportResult(False, items, status="shutdown", message="the client is shut down")
        partial = response.partial_success
        return ExportResult(True, items, rejected=getattr(partial, self._rejected_field),
                            message=partial.error_message, status="OK")

    def shutdown(self) -> None:
        """Ends a backoff wait and cancels a call in flight at once; later exports fail."""
        self._stop.set()
        self._channel.close()
