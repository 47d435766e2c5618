"""OtlpSpanExporter: the OpenTelemetry SDK's SpanExporter (export, shutdown, force_flush) over our OTLP client.

The tracer's own Spans (flat records, no SDK object per span) are encoded
with export.otlp.wire, the one encoder for both protocols, straight into
request bytes, which the client sends as they are.

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

from ...assemble import Span
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .wire import encode_request
from .client import make_client
from .delivery import Backoff
from .settings import OtlpSettings

log = logging.getLogger("spanprobe.tracer")

#: Seconds between two log lines about the same kind of failure.
LOG_EVERY_S = 10.0


class OtlpSpanExporter(SpanExporter):
    def __init__(self, settings: OtlpSettings, on_rejected: Optional[Callable[[int, str], None]] = None,
                 backoff: Backoff = Backoff()):
        if settings.signal != "traces":
            raise ValueError("OtlpSpanExporter exports traces, not %s" % settings.signal)
        self.settings = settings
        self.client = make_client(settings, backoff)
        self._on_rejected = on_rejected
        self._logged: Dict[str, Tuple[float, int]] = {}   # kind -> (last logged, repeats since)

    def export(self, spans: Sequence[Span]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            body = encode_request(spans)
        except Exception as exc:  # a value wire cannot encode: a bug, reported, not a dead export thread
            self._warn("encode", "cannot encode %d spans for OTLP: %s: %s" % (len(spans), type(exc).__name__, exc))
            return SpanExportResult.FAILURE
        result = self.client.export(body, len(spans))
        if not result.ok:
            self._warn(result.status, "OTLP export of %d spans to %s failed after %d attempt(s): %s %r" % (
                len(spans), self.settings.endpoint, result.attempts, result.status, result.message))
            return SpanExportResult.FAILURE
        if result.rejected or result.message:
            self._warn("partial", "the OTLP server rejected %d of %d spans: %r" % (
                result.rejected, len(spans), result.message))
            if result.rejected and self._on_rejected is not None:
                self._on_rejected(result.rejected, result.message)
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

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here: each export is sent before it returns."""
        return True
