"""otel_span payloads -> EncodedSpans: the application's OpenTelemetry API spans, as it made them.

The payload is an OTLP ``ScopeSpans`` holding one span (spanprobe.abi.otlp
wrote it in the application; docs/otel-mapping.md). It is split, not
rebuilt: the scope (and schema_url) becomes the span's InstrumentationScope,
for grouping with the tracer's other spans, and the Span message goes on as
bytes (an assemble.telemetry.EncodedSpan), which export.otlp.wire sends as it
is. Everything in it is kept: ids, parent and its is-remote bit, trace
state, name, kind, the application's own start and end times (wall clock),
attributes of every type, events, links, status, dropped counts. Only the
resource is the tracer's: the traced process's (assemble.resource). Span.flags
is rewritten to what the official exporter writes (the is-remote bits); the
W3C trace flags it carried in bits 0-7 are kept beside the bytes.

What cannot be one well-formed span raises BadPayload, for the caller to count.
"""

from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Optional, Tuple

from google.protobuf.message import DecodeError
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, StatusCode

from spanprobe.abi.otlp import FLAG_HAS_IS_REMOTE, FLAG_IS_REMOTE, KIND_OFFSET

from ..decode import OtelSpanRecord
from .telemetry import EncodedSpan, attributes


class BadPayload(ValueError):
    """An otel_span payload that is not one OTLP span."""


#: The attributes http.server.request.duration groups by (semantic conventions).
HTTP_KEYS = ("http.request.method", "http.route", "http.response.status_code")
#: In the payload of every span that has the method attribute (the key is written as it is).
_METHOD_KEY = HTTP_KEYS[0].encode()
#: OTLP Span.kind values that are SpanKinds (SPAN_KIND_INTERNAL = 1 ... SPAN_KIND_CONSUMER = 5), and SERVER.
_KINDS = range(KIND_OFFSET, KIND_OFFSET + len(SpanKind))
_SERVER = SpanKind.SERVER.value + KIND_OFFSET
_STATUS_CODES = range(len(StatusCode))


class ApiSpanSummary(NamedTuple):
    """What span metrics need of an OpenTelemetry API span (session.span_metrics counts it), as OTLP
    writes it: plain ints, so that counting a span costs no enum lookups."""

    pid: int
    name: str
    #: OTLP Span.kind (SpanKind's value plus KIND_OFFSET)
    kind: int
    #: OTLP Status.code (StatusCode's value)
    status: int
    duration_ns: int
    #: (http.request.method, http.route or None, http.response.status_code or None) of a server span
    #: that has a method, else None
    http: Optional[Tuple[str, Optional[str], Optional[int]]]


def _http(s) -> Optional[Tuple[str, Optional[str], Optional[int]]]:
    found = {}
    for kv in s.attributes:
        if kv.key in HTTP_KEYS:
            v = kv.value
            found[kv.key] = v.string_value if v.HasField("string_value") else (
                v.int_value if v.HasField("int_value") else None)
    method = found.get(HTTP_KEYS[0])
    if not isinstance(method, str):
        return None
    route, status = found.get(HTTP_KEYS[1]), found.get(HTTP_KEYS[2])
    return (method, route if isinstance(route, str) else None, status if isinstance(status, int) else None)


class OtelSpanReader:
    """Builds EncodedSpans from otel_span records, with ``resource_for(pid)`` as their resource.
    ``observe``, when set, is handed an ApiSpanSummary of every span read (span metrics)."""

    def __init__(self, resource_for: Callable[[int], Resource]):
        self._resource_for = resource_for
        self._scopes: Dict[Tuple, InstrumentationScope] = {}
        self.observe: Optional[Callable[[ApiSpanSummary], None]] = None

    def _scope(self, s, schema_url: str) -> InstrumentationScope:
        key = (s.SerializeToString(), schema_url)  # one InstrumentationScope per distinct scope
        scope = self._scopes.get(key)
        if scope is None:
            scope = self._scopes[key] = InstrumentationScope(s.name, s.version or None, schema_url or None,
                                                             attributes(s.attributes) or None)
        return scope

    def span(self, rec: OtelSpanRecord) -> EncodedSpan:
        """The span a record carries. Raises BadPayload when it is cut or is not one OTLP span."""
        if not rec.complete:
            raise BadPayload("the payload did not arrive whole")
        try:
            message = ScopeSpans.FromString(rec.payload)
        except DecodeError as exc:
            raise BadPayload("not an OTLP ScopeSpans: %s" % exc) from None
        if len(message.spans) != 1:
            raise BadPayload("%d spans in one payload" % len(message.spans))
        s = message.spans[0]
        kind, status = s.kind, s.status.code
        # what the console and JSON lines will need to read it (EncodedSpan.decoded)
        if kind not in _KINDS:
            raise BadPayload("%d is not a valid SpanKind" % (kind - KIND_OFFSET))
        if status not in _STATUS_CODES:
            raise BadPayload("%d is not a valid StatusCode" % status)
        if self.observe is not None:
            # Attributes are read (the slow part) only from server spans whose payload holds the method's key.
            self.observe(ApiSpanSummary(rec.pid, s.name, kind, status,
                                        max(0, s.end_time_unix_nano - s.start_time_unix_nano),
                                        _http(s) if kind == _SERVER and _METHOD_KEY in rec.payload else None))
        trace_flags = s.flags & 0xFF
        s.flags = FLAG_HAS_IS_REMOTE | (s.flags & FLAG_IS_REMOTE)  # what the official exporter writes
        return EncodedSpan(s.SerializeToString(), self._resource_for(rec.pid),
                           self._scope(message.scope, message.schema_url), trace_flags)
