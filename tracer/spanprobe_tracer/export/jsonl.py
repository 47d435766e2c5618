"""The JSON-lines exporter: one JSON object per span or event per line, to a file or standard output.

Event lines (plain probe hits, events outside a span: OpenTelemetry events)
carry ``"signal": "log"``; span lines are as they always were, an
OpenTelemetry API span's (otel_span) with its ``links`` last when it has any.

Values JSON cannot carry as they are become something it can: bytes as
``{"bytes_base64": ...}``, NaN and infinities as their repr().
"""

from __future__ import annotations

import base64
import json
import json.encoder
import sys
from typing import Mapping, Optional, Sequence, Union

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from ..assemble import Span
from ..assemble.telemetry import UNSET, EncodedSpan, LogEvent

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


_encode = json.JSONEncoder(ensure_ascii=False).encode   # json.dumps(..., ensure_ascii=False), made once


def _default(value):
    """What the fast encoder cannot write itself: bytes, and mappings that are not dicts."""
    if isinstance(value, bytes):
        return {"bytes_base64": base64.b64encode(value).decode()}
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError("cannot write a %s as JSON" % type(value).__name__)


# The same text as _encode of _json_value'd values, in one pass of json's C encoder; a NaN or an
# infinity (not JSON) makes it raise ValueError, and such values take the careful way. The encoder
# function is made once: JSONEncoder.encode makes a new one per call (half the cost of a small dict).
if json.encoder.c_make_encoder is not None:
    _chunks = json.encoder.c_make_encoder(None, _default, json.encoder.encode_basestring, None, ": ", ", ",
                                          False, False, False)

    def _fast(value) -> str:
        return "".join(_chunks(value, 0))
else:  # pragma: no cover - CPython without its _json accelerator
    _fast = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=_default).encode


def _object(mapping) -> str:
    """A JSON object of attributes, values made JSON-safe as _json_value does."""
    try:
        return _fast(mapping)
    except ValueError:
        return _encode({k: _json_value(v) for k, v in mapping.items()})


_KIND_NAMES = {id(kind): kind.name for kind in SpanKind}
_UNSET_JSON = _encode({"code": UNSET.status_code.name, "description": UNSET.description})

_LINE = ('{"name": %s, "trace_id": "%032x", "span_id": "%016x", "parent_span_id": %s, "trace_flags": %d, '
         '"kind": "%s", "start_time_unix_nano": %d, "end_time_unix_nano": %d, "duration_ns": %d, "status": %s, '
         '"attributes": %s, "events": %s, %s%s}\n')


class SpanLines:
    """Span -> its JSON line: keys in a fixed order, the JSON of what many spans share made once."""

    def __init__(self, limit: int = 4096):
        #: (id(scope), id(resource)) -> (scope, resource, '"scope": ..., "resource": {...}'); the entry
        #: keeps both alive, so their ids cannot be reused while cached. Emptied past ``limit``.
        self._tails: dict = {}
        self._limit = limit

    def _tail(self, scope, resource) -> str:
        entry = self._tails.get((id(scope), id(resource)))
        if entry is None or entry[0] is not scope or entry[1] is not resource:
            if len(self._tails) >= self._limit:
                self._tails.clear()
            text = '"scope": %s, "resource": %s' % (_encode(scope.name) if scope is not None else "null",
                                                    _object(resource.attributes) if resource is not None else "{}")
            entry = self._tails[(id(scope), id(resource))] = (scope, resource, text)
        return entry[2]

    def __call__(self, span: Union[Span, EncodedSpan]) -> str:
        if span.__class__ is EncodedSpan:
            span = span.decoded()
        start, end, status = span.start_time, span.end_time, span.status
        return _LINE % (
            _encode(span.name), span.trace_id, span.span_id,
            '"%016x"' % span.parent_id if span.parent_id else "null", span.trace_flags, _KIND_NAMES[id(span.kind)],
            start, end, end - start,
            _UNSET_JSON if status is UNSET else _encode({"code": status.status_code.name,
                                                        "description": status.description}),
            _object(span.attributes) if span.attributes else "{}",
            _encode([{"name": e.name, "time_unix_nano": e.timestamp,
                      "attributes": {k: _json_value(v) for k, v in (e.attributes or {}).items()}}
                     for e in span.events]) if span.events else "[]",
            self._tail(span.instrumentation_scope, span.resource),
            _links(span.links) if span.links else "")


def _links(links) -> str:
    """The line's last field: an OpenTelemetry API span's links (probe spans never have any)."""
    return ', "links": ' + _encode([{"trace_id": "%032x" % link.context.trace_id,
                                    "span_id": "%016x" % link.context.span_id,
                                    "attributes": {k: _json_value(v) for k, v in (link.attributes or {}).items()}}
                                   for link in links])


_EVENT_LINE = ('{"signal": "log", "event_name": %s, "time_unix_nano": %d, "trace_id": %s, "span_id": %s, '
               '"trace_flags": %d, "attributes": %s, %s}\n')


class EventLines(SpanLines):
    """LogEvent -> its JSON line, marked ``"signal": "log"`` (span lines have no "signal")."""

    def __call__(self, event: LogEvent) -> str:
        return _EVENT_LINE % (
            _encode(event.event_name), event.time,
            '"%032x"' % event.trace_id if event.trace_id else "null",
            '"%016x"' % event.span_id if event.span_id else "null", event.trace_flags,
            _object(event.attributes), self._tail(event.instrumentation_scope, event.resource))


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
        return self._write(map(self._line, spans))

    def export_events(self, events: Sequence[LogEvent]) -> SpanExportResult:
        return self._write(map(self._event_line, events))

    def _write(self, lines) -> SpanExportResult:
        try:
            self._file.write("".join(lines))
            self._file.flush()
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._owned:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
