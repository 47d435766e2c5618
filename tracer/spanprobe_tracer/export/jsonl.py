"""The JSON-lines exporter: one JSON object per span or event per line, to a file or standard output.

Event lines (plain probe hits, events outside a span: OpenTelemetry events)
carry ``"signal": "log"``; span lines are as they always were.

Values JSON cannot carry as they are become something it can: bytes as
``{"bytes_base64": ...}``, NaN and infinities as their repr().
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Optional, Sequence

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ..assemble import Span
from ..assemble.telemetry import LogEvent

from ..errors import TracerError


def _json_value(value):
    if isinstance(value, bytes):
        return {"bytes_base64": base64.b64encode(value).decode()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return repr(value)  # NaN/inf are not JSON
    return value


_encode = json.JSONEncoder(ensure_ascii=False).encode   # json.dumps(..., ensure_ascii=False), made once
_PLAIN = (str, int, bool)                                  # values JSON takes as they are


def _object(mapping) -> str:
    """A JSON object of attributes, values made JSON-safe (_json_value) only when one needs it."""
    for v in mapping.values():
        if type(v) not in _PLAIN:
            return _encode({k: _json_value(v) for k, v in mapping.items()})
    return _encode(mapping if type(mapping) is dict else dict(mapping))


class _Shared:
    """JSON text of what many spans share (a resource, a scope, a status), made once per object.

    Keyed by id(); the entry keeps the object alive, so its id cannot be reused
    while it is cached. Bounded: emptied when it grows past ``limit``."""

    def __init__(self, render, limit: int = 4096):
        self._render = render
        self._limit = limit
        self._by_id: dict = {}

    def __call__(self, obj) -> str:
        entry = self._by_id.get(id(obj))
        if entry is None or entry[0] is not obj:
            if len(self._by_id) >= self._limit:
                self._by_id.clear()
            entry = self._by_id[id(obj)] = (obj, self._render(obj))
        return entry[1]


_LINE = ('{"name": %s, "trace_id": "%032x", "span_id": "%016x", "parent_span_id": %s, "trace_flags": %d, '
         '"kind": "%s", "start_time_unix_nano": %d, "end_time_unix_nano": %d, "duration_ns": %d, "status": %s, '
         '"attributes": %s, "events": %s, "scope": %s, "resource": %s}\n')


class SpanLines:
    """Span -> its JSON line: keys in a fixed order, the shared parts' JSON cached."""

    def __init__(self):
        self._resource = _Shared(lambda r: _object(r.attributes) if r is not None else "{}")
        self._scope = _Shared(lambda s: _encode(s.name) if s is not None else "null")
        self._status = _Shared(lambda st: _encode({"code": st.status_code.name, "description": st.description}))

    def __call__(self, span: Span) -> str:
        start, end = span.start_time, span.end_time
        return _LINE % (
            _encode(span.name), span.trace_id, span.span_id,
            '"%016x"' % span.parent_id if span.parent_id else "null", span.trace_flags, span.kind.name,
            start, end, end - start, self._status(span.status),
            _object(span.attributes) if span.attributes else "{}",
            _encode([{"name": e.name, "time_unix_nano": e.timestamp,
                      "attributes": {k: _json_value(v) for k, v in (e.attributes or {}).items()}}
                     for e in span.events]) if span.events else "[]",
            self._scope(span.instrumentation_scope), self._resource(span.resource))


_EVENT_LINE = ('{"signal": "log", "event_name": %s, "time_unix_nano": %d, "trace_id": %s, "span_id": %s, '
               '"trace_flags": %d, "attributes": %s, "scope": %s, "resource": %s}\n')


class EventLines(SpanLines):
    """LogEvent -> its JSON line, marked ``"signal": "log"`` (span lines have no "signal")."""

    def __call__(self, event: LogEvent) -> str:
        return _EVENT_LINE % (
            _encode(event.event_name), event.time,
            '"%032x"' % event.trace_id if event.trace_id else "null",
            '"%016x"' % event.span_id if event.span_id else "null", event.trace_flags,
            _object(event.attributes), self._scope(event.instrumentation_scope), self._resource(event.resource))


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
        self._line = SpanLines()
        self._event_line = EventLines()

    def export(self, spans: Sequence[Span]) -> SpanExportResult:
        try:
            self._file.write("".join(map(self._line, spans)))
            self._file.flush()
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def export_events(self, events: Sequence[LogEvent]) -> SpanExportResult:
        try:
            self._file.write("".join(map(self._event_line, events)))
            self._file.flush()
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._owned:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
