"""OtlpSpanExporter: the OpenTelemetry SDK's SpanExporter (export, shutdown, force_flush) over our OTLP client.

The tracer's own Spans (flat records, no SDK object per span) are encoded
with export.otlp.wire, the one encoder for both protocols, straight into
request bytes, which the client sends as they are. Its events (LogEvents) go
the same way as OTLP log records, with the logs signal's settings
(OTEL_EXPORTER_OTLP_LOGS_*, else the common ones), through a client of their own.

A partial success counts as exported (the server took the request, and the
specification forbids sending it again); the spans it rejected go to
``on_rejected(count, message)`` so the caller can count them as lost. Failures
are logged with their status and message, each kind at most every 10 s. The
server's messages are shown with repr(): they are untrusted text.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ...assemble import Span
from ...assemble.telemetry import LogEvent
from .wire import encode_logs_request, encode_request
from .client import make_client
from .delivery import Backoff
from .settings import OtlpSettings

log = logging.getLogger("spanprobe.tracer")

#: Seconds between two log lines about the same kind of failure.
LOG_EVERY_S = 10.0


class OtlpSpanExporter(SpanExporter):
    #: Spans reach it only to be encoded: the session may hand it EncodedSpans made straight from
    #: span records (export.otlp.records) instead of Spans.
    takes_span_bytes = True

    def __init__(self, settings: OtlpSettings, on_rejected: Optional[Callable[[int, str], None]] = None,
                 backoff: Backoff = Backoff(), events_settings: Optional[OtlpSettings] = None,
                 on_events_rejected: Optional[Callable[[int, str], None]] = None):
        if settings.signal != "traces":
            raise ValueError("OtlpSpanExporter exports traces, not %s" % settings.signal)
        if events_settings is not None and events_settings.signal != "logs":
            raise ValueError("events are exported as logs, not %s" % events_settings.signal)
        self.settings = settings
        self.client = make_client(settings, backoff)
        self.events_settings = events_settings
        self.events_client = make_client(events_settings, backoff) if events_settings is not None else None
        self._on_rejected = on_rejected
        self._on_events_rejected = on_events_rejected
        self._logged: Dict[str, Tuple[float, int]] = {}   # kind -> (last logged, repeats since)

    def export(self, spans: Sequence[Span]) -> SpanExportResult:
        return self._send(spans, encode_request, self.client, self.settings, "spans", self._on_rejected)

    def export_events(self, events: Sequence[LogEvent]) -> SpanExportResult:
        """Events as OTLP log records; a failure when no logs settings were given (counted, not lost silently)."""
        if self.events_client is None:
            self._warn("no-logs", "%d events not exported: this exporter has no OTLP logs settings" % len(events))
            return SpanExportResult.FAILURE
        return self._send(events, encode_logs_request, self.events_client, self.events_settings, "events",
                          self._on_events_rejected)

    def _send(self, items: Sequence, encode, client, settings: OtlpSettings, what: str,
              on_rejected: Optional[Callable[[int, str], None]]) -> SpanExportResult:
        if not items:
            return SpanExportResult.SUCCESS
        try:
            body = encode(items)
        except Exception as exc:  # a value wire cannot encode: a bug, reported, not a dead export thread
            self._warn("encode", "cannot encode %d %s for OTLP: %s: %s" % (len(items), what, type(exc).__name__, exc))
            return SpanExportResult.FAILURE
        result = client.export(body, len(items))
        if not result.ok:
            self._warn(result.status, "OTLP export of %d %s to %s failed after %d attempt(s): %s %r" % (
                len(items), what, settings.endpoint, result.attempts, result.status, result.message))
            return SpanExportResult.FAILURE
        if result.rejected or result.message:
            self._warn("partial", "the OTLP server rejected %d of %d %s: %r" % (
                result.rejected, len(items), what, result.message))
            if result.rejected and on_rejected is not None:
                on_rejected(result.rejected, result.message)
        return SpanExportResult.SUCCESS

    def _warn(self, kind: str, message: str) -> None:
        now = time.monotonic()
        last, repeats = self._logged.get(kind, (None, 0))
        if last is not None and now - last < LOG_EVERY_S:
            self._logged[kind] = (last, repeats + 1)
            return
        self._logged[kind] = (now, 0)
        log.warning("%s%s", message, " (%d more like it since the last report)" % repeats if repeats else "")

    def shutdown(self) -> None:
        self.client.shutdown()
        if self.events_client is not None:
            self.events_client.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here: each export is sent before it returns."""
        return True
