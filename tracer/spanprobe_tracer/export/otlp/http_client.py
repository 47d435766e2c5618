"""OTLP/HTTP (binary protobuf) over the standard library: one kept-alive connection per client.

Retryable: HTTP 429, 502, 503 and 504 (Retry-After honoured, in seconds or as
a date), a connection that cannot be made, and one that breaks before the
answer (OTLP specification, "Failures", "All Other Responses", "OTLP/HTTP
Connection"). A kept-alive connection the server closed meanwhile is
reopened and the request sent again at once. Everything else, a redirect
included, is reported at once: a redirected POST is not followed (point the
endpoint at the final URL). Error bodies are google.rpc.Status messages; their
message is reported.
"""

from __future__ import annotations

import email.utils
import gzip
import http.client
import socket
import ssl
import threading
import time
import zlib
from typing import Optional, Union

from google.rpc import status_pb2

from . import tls
from .delivery import Backoff, ExportResult, Transient, deliver
from .settings import USER_AGENT, OtlpSettings
from .signals import SIGNALS

RETRYABLE = frozenset({429, 502, 503, 504})
CONTENT_TYPE = "application/x-protobuf"
# Measured on a 1024-span request (150 kB): level 1 takes 0.35 µs a span and makes it 16.7 kB,
# level 6 2.0 µs for 16.5 kB, level 9 (gzip's default, the official exporter's) 7.4 µs for 16.4 kB.
_GZIP_LEVEL = 1
# A kept-alive connection the server closed while idle fails in one of these ways on reuse.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _status_message(body: bytes, reason: str) -> str:
    """The message of a google.rpc.Status error body, else the reason phrase."""
    try:
        message = status_pb2.Status.FromString(body).message
    except Exception:  # not a Status (a proxy's HTML page, ...)
        message = ""
    return message or reason


class HttpClient:
    """Export*ServiceRequest bytes of one signal POSTed to an OTLP/HTTP server."""

    def __init__(self, settings: OtlpSettings, backoff: Backoff = Backoff()):
        signal = SIGNALS[settings.signal]
        self.settings = settings
        self._backoff = backoff
        self._response = signal.response
        self._rejected_field = signal.rejected_field
        self._context = tls.ssl_context(settings) if settings.secure else None
        headers = {"user-agent": USER_AGENT}
        headers.update(settings.headers)              # may replace the user-agent, not the protocol's own
        headers["content-type"] = CONTENT_TYPE
        if settings.compression != "none":
            headers["content-encoding"] = settings.compression
        self._headers = headers
        self._stop = threading.Event()
        self._lock = threading.Lock()                 # guards _connection against shutdown()
        self._connection: Optional[http.client.HTTPConnection] = None

    def export(self, body: bytes, items: int) -> ExportResult:
        """Send one encoded request (``items``: the spans, points or records in it), retrying as the spec says."""
        if self._stop.is_set():
            return ExportResult(False, items, status="shutdown", message="the client is shut down", attempts=0)
        if self.settings.compression == "gzip":
            body = gzip.compress(body, _GZIP_LEVEL, mtime=0)
        elif self.settings.compression == "deflate":
            body = zlib.compress(body)
        return deliver(lambda remaining: self._attempt(body, items, remaining), items, self.settings.timeout,
                       self._backoff, self._stop)

    def _connect(self) -> http.client.HTTPConnection:
        s = self.settings
        if self._context is not None:
            return http.client.HTTPSConnection(s.host, s.port, context=self._context)
        return http.client.HTTPConnection(s.host, s.port)

    def _attempt(self, body: bytes, items: int, remaining: Optional[float]) -> Union[ExportResult, Transient]:
        if remaining is not None and remaining <= 0:
            return Transient("timeout", "no time left")
        for fresh_try in (False, True):
            with self._lock:
                if self._stop.is_set():
                    return ExportResult(False, items, status="shutdown", message="the client is shut down")
                if self._connection is None:
                    self._connection = self._connect()
                connection = self._connection
            reused = connection.sock is not None
            connection.timeout = remaining
            try:
                if reused:
                    connection.sock.settimeout(remaining)
                connection.request("POST", self.settings.path, body, self._headers)
                response = connection.getresponse()
                data = response.read()
            except Exception as exc:  # noqa: BLE001 - every way a request can fail is sorted below
                self._drop(connection)
                if self._stop.is_set():
                    return ExportResult(False, items, status="shutdown", message="the client was shut down")
                if reused and not fresh_try and isinstance(exc, _STALE):
                    continue
                return self._connection_failure(exc, items)
            return self._answer(response, data, items)
        raise AssertionError("unreachable")

    def _connection_failure(self, exc: Exception, items: int) -> Union[ExportResult, Transient]:
        where = "%s:%d" % (self.settings.host, self.settings.port)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return ExportResult(False, items, status="tls", message="%s: %s" % (where, exc.verify_message or exc))
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return Transient("timeout", "no answer from %s in time" % where)
        if isinstance(exc, (OSError, http.client.HTTPException)):
            return Transient("connection", "%s: %s" % (where, getattr(exc, "strerror", None) or exc or type(exc).__name__))
        raise exc

    def _answer(self, response: http.client.HTTPResponse, data: bytes, items: int) -> Union[ExportResult, Transient]:
        status = response.status
        if response.getheader("content-encoding", "").strip().lower() == "gzip":
            data = gzip.decompress(data)
        if 200 <= status < 300:
            try:
                partial = self._response.FromString(data).partial_success
            except Exception:  # accepted, but the answer is not the protocol's: nothing more to learn
                return ExportResult(True, items, status="HTTP %d" % status,
                                    message="the response body is not an Export response")
            return ExportResult(True, items, rejected=getattr(partial, self._rejected_field),
                                message=partial.error_message, status="OK")
        message = _status_message(data, response.reason)
        if status in RETRYABLE:
            return Transient("HTTP %d" % status, message, retry_after(response.getheader("retry-after")))
        if 300 <= status < 400:
            message = "redirected to %s; not followed: give that URL as the endpoint" % response.getheader("location")
        return ExportResult(False, items, status="HTTP %d" % status, message=message)

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if self._connection is connection:
                self._connection = None
        connection.close()

    def shutdown(self) -> None:
        """Ends a backoff wait and breaks off a request in flight at once; later exports fail."""
        self._stop.set()
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            sock = connection.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes an export thread blocked reading the answer
                except OSError:
                    pass
            connection.close()
