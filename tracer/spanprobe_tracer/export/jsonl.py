"""The JSON-lines exporter: one JSON object per span per line, to a file or standard output.

Values JSON cannot carry as they are become something it can: bytes as
``{"bytes_base64": ...}``, NaN and infinities as their repr().
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Optional, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ..errors import TracerError


def _json_value(value):
    if isinstance(value, bytes):
        return {"bytes_base64": base64.b64encode(value).decode()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):  # an OpenTelemetry API span's map value
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return repr(value)  # NaN/inf are not JSON
    return value


def span_to_dict(span: ReadableSpan) -> dict:
    out = {
        "name": span.name,
        "trace_id": "%032x" % span.context.trace_id,
        "span_id": "%016x" % span.context.span_id,
        "parent_span_id": "%016x" % span.parent.span_id if span.parent else None,
        "trace_flags": int(span.context.trace_flags),
        "kind": span.kind.name,
        "start_time_unix_nano": span.start_time,
        "end_time_unix_nano": span.end_time,
        "duration_ns": (span.end_time or 0) - (span.start_time or 0),
        "status": {"code": span.status.status_code.name, "description": span.status.description},
        "attributes": {k: _json_value(v) for k, v in (span.attributes or {}).items()},
        "events": [{"name": e.name, "time_unix_nano": e.timestamp,
                    "attributes": {k: _json_value(v) for k, v in (e.attributes or {}).items()}}
                   for e in span.events],
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
        "resource": {k: _json_value(v) for k, v in (span.resource.attributes if span.resource else {}).items()},
    }
    if span.links:  # OpenTelemetry API spans may have links; probe spans never do
        out["links"] = [{"trace_id": "%032x" % link.context.trace_id, "span_id": "%016x" % link.context.span_id,
                         "attributes": {k: _json_value(v) for k, v in (link.attributes or {}).items()}}
                        for link in span.links]
    return out


class JsonLinesExporter(SpanExporter):
    """One JSON object per span per line (``-`` or no file: standard output)."""

    def __init__(self, path: Optional[str]):
        self.path = path
        if path in (None, "-"):
            self._file = sys.stdout
            self._owned = False
        else:
            try:
                self._file = open(path, "a", encoding="utf-8")
            except OSError as exc:
                raise TracerError("cannot open --output %s: %s" % (path, exc.strerror)) from None
            self._owned = True

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self._file.write("".join(json.dumps(span_to_dict(s), ensure_ascii=False) + "\n" for s in spans))
            self._file.flush()
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._owned:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
