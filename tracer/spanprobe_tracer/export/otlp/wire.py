"""Spans and events (assemble.telemetry) -> OTLP ExportTraceServiceRequest / ExportLogsServiceRequest bytes.

The official encoder (opentelemetry-exporter-otlp-proto-common) builds a
protobuf object per span, attribute and value, and hashes each span's
Resource by serializing its attributes to JSON: about 27 µs per span here,
which alone would cap the tracer near 30,000 spans/s on one core. The tracer
exports every span it sees, so this module writes the protobuf wire format
directly, with resource and scope messages encoded once per batch group and
attribute keys encoded once ever.

The output is byte-for-byte what the official encoder produces for the same
spans (tests/tracer/export/test_otlp_wire.py checks this on every attribute
type), so collectors see no difference. export.otlp.span_exporter sends what
it encodes over gRPC or HTTP with our own OTLP client (export.otlp): one
encoder for both protocols.

Events (plain probe hits, events outside a span) are OTLP log records with
event_name, encoded the same way into an ExportLogsServiceRequest, byte for
byte what protobuf writes for the same messages (tested).

Field numbers: opentelemetry/proto/{collector/trace,collector/logs,trace,logs,common,resource}/v1/*.proto.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Sequence, Union

from ...assemble.telemetry import UNSET, EncodedSpan, LogEvent, Span

_double = struct.Struct("<d").pack
_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack


def varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if value < 0x200000:
        return bytes(((value & 0x7F) | 0x80, (value >> 7 & 0x7F) | 0x80, value >> 14))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_LEN = [bytes((n,)) for n in range(128)]


def _len(n: int) -> bytes:
    return _SMALL_LEN[n] if n < 128 else varint(n)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _len(len(payload)) + payload


# Tags (field number << 3 | wire type), precomputed.
_T_STRING = b"\x0a"      # AnyValue.string_value = 1
_T_BOOL = b"\x10"        # AnyValue.bool_value = 2
_T_INT = b"\x18"         # AnyValue.int_value = 3
_T_DOUBLE = b"\x21"      # AnyValue.double_value = 4 (fixed64)
_T_ARRAY = b"\x2a"       # AnyValue.array_value = 5
_T_KVLIST = b"\x32"      # AnyValue.kvlist_value = 6
_T_BYTES = b"\x3a"       # AnyValue.bytes_value = 7
_T_KV_KEY = b"\x0a"      # KeyValue.key = 1
_T_KV_VALUE = b"\x12"    # KeyValue.value = 2
_T_REPEATED1 = b"\x0a"   # field 1, length-delimited (ArrayValue.values, KeyValueList.values, ...)


def _any_value(value) -> bytes:
    """An AnyValue message body (the official encoder's _encode_value)."""
    if value is None:
        return b""
    if value is True:
        return b"\x10\x01"
    if value is False:
        return b"\x10\x00"
    t = type(value)
    if t is str:
        data = value.encode("utf-8")
        return _T_STRING + _len(len(data)) + data
    if t is int:
        return _T_INT + varint(value)
    if t is float:
        return _T_DOUBLE + _double(value)
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        data = value.encode("utf-8")
        return _T_STRING + _len(len(data)) + data
    if isinstance(value, int):
        return _T_INT + varint(int(value))
    if isinstance(value, float):
        return _T_DOUBLE + _double(value)
    if isinstance(value, bytes):
        return _T_BYTES + _len(len(value)) + value
    if isinstance(value, (list, tuple)):
        inner = b"".join(_field(_T_REPEATED1, _any_value(v)) for v in value)
        return _field(_T_ARRAY, inner)
    if isinstance(value, dict):
        inner = b"".join(_field(_T_REPEATED1, _key_value(str(k), v)) for k, v in value.items())
        return _field(_T_KVLIST, inner)
    raise TypeError("cannot encode attribute value of type %s" % t.__name__)


_key_cache: Dict[str, bytes] = {}


def _new_key(key: str) -> bytes:
    """Encode a KeyValue.key field and remember it: keys repeat, so a lookup usually serves.

    The cache is bounded, against a process that makes up a new key per span.
    """
    data = key.encode("utf-8")
    k = _T_KV_KEY + _len(len(data)) + data
    if len(_key_cache) < 65536:
        _key_cache[key] = k
    return k


def _key_value(key: str, value) -> bytes:
    k = _key_cache.get(key) or _new_key(key)
    return k + _field(_T_KV_VALUE, _any_value(value))


def _attributes(tag: bytes, attributes) -> bytes:
    if not attributes:
        return b""
    return b"".join(_field(tag, _key_value(k, v)) for k, v in attributes.items())


def _uint(tag: bytes, value) -> bytes:
    return tag + varint(value) if value else b""


def _string(tag: bytes, value) -> bytes:
    if not value:
        return b""
    data = value.encode("utf-8")
    return tag + _len(len(data)) + data


# Span fields.
S_TRACE_ID = b"\x0a\x10"           # 1, bytes, always 16 long
S_SPAN_ID = b"\x12\x08"            # 2, bytes, 8
_S_TRACE_STATE = b"\x1a"           # 3
S_PARENT = b"\x22\x08"             # 4, bytes, 8
_S_NAME = b"\x2a"                  # 5
_S_KIND = b"\x30"                  # 6, enum
S_START = b"\x39"                  # 7, fixed64
S_END = b"\x41"                    # 8, fixed64
S_ATTR = b"\x4a"                   # 9
_S_EVENT = b"\x5a"                 # 11
_S_LINK = b"\x6a"                  # 13
_S_STATUS = b"\x7a"                # 15
_S_FLAGS = b"\x85\x01"             # 16, fixed32
STATUS_UNSET = _S_STATUS + b"\x00"  # an empty Status message: what the official encoder writes for UNSET
FLAGS_LOCAL = _S_FLAGS + _fixed32(0x100)    # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_FLAGS_REMOTE = _S_FLAGS + _fixed32(0x300)  # ... | SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_KIND = [_S_KIND + bytes((k + 1,)) for k in range(5)]  # SDK SpanKind value -> proto enum (+1)
# Fields that go together, packed in one call: trace id (two big-endian halves) and span id; both times.
_IDS = struct.Struct(">%dsQQ%dsQ" % (len(S_TRACE_ID), len(S_SPAN_ID))).pack
_TIMES = struct.Struct("<%dsQ%dsQ" % (len(S_START), len(S_END))).pack



def _status(status) -> bytes:
    if status is None:
        return b""
    body = _string(b"\x12", status.description) + _uint(b"\x18", status.status_code.value)
    return _S_STATUS + _len(len(body)) + body


def _event(event) -> bytes:
    body = (b"\x09" + _fixed64(event.timestamp or 0) if event.timestamp else b"") \
        + _string(b"\x12", event.name) + _attributes(b"\x1a", event.attributes) \
        + _uint(b"\x20", getattr(event, "dropped_attributes", 0))
    return _S_EVENT + _len(len(body)) + body


def _link(link) -> bytes:
    ctx = link.context
    body = (b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big") + b"\x12\x08" + ctx.span_id.to_bytes(8, "big")
            + _attributes(b"\x22", link.attributes) + _uint(b"\x28", link.dropped_attributes)
            + b"\x35" + _fixed32(0x300 if ctx.is_remote else 0x100))
    return _S_LINK + _len(len(body)) + body


#: Whole attribute fields of values that repeat (a route, a status code, a thread id), by (tag, key, value),
#: for str (short) and int values only: equal values of those types encode alike. A key stops being
#: cached once it has shown MAX_VALUES_PER_KEY values (an id, a counter); the cache stops growing at
#: MAX_CACHED_FIELDS.
_fields: Dict[tuple, bytes] = {}
_values_per_key: Dict[tuple, int] = {}
MAX_VALUES_PER_KEY = 256
MAX_CACHED_FIELDS = 65536


def _attribute_fields(tag: bytes, attributes, parts: list) -> None:
    """Append each attribute as a KeyValue field; the common value types inline (hot path)."""
    cache = _key_cache
    fields = _fields
    for key, value in attributes.items():
        t = type(value)
        cacheable = (t is int or (t is str and len(value) <= 64))
        if cacheable:
            field = fields.get((tag, key, value))
            if field is not None:
                parts.append(field)
                continue
        k = cache.get(key)
        if k is None:
            k = _new_key(key)
        if t is str:
            data = value.encode("utf-8")
            n = len(data)
            av = (b"\x0a" + _SMALL_LEN[n] if n < 128 else b"\x0a" + varint(n)) + data
        elif t is int:
            av = b"\x18" + (_SMALL_LEN[value] if 0 <= value < 128 else varint(value))
        elif t is bool:
            av = b"\x10\x01" if value else b"\x10\x00"
        elif t is float:
            av = b"\x21" + _double(value)
        else:
            av = _any_value(value)
        n = len(av)
        kv = k + (b"\x12" + _SMALL_LEN[n] if n < 128 else b"\x12" + varint(n)) + av
        n = len(kv)
        field = (tag + _SMALL_LEN[n] if n < 128 else tag + varint(n)) + kv
        parts.append(field)
        if cacheable and len(fields) < MAX_CACHED_FIELDS:
            seen = _values_per_key.get((tag, key), 0)
            if seen < MAX_VALUES_PER_KEY:
                _values_per_key[(tag, key)] = seen + 1
                fields[(tag, key, value)] = field


def attribute_field(tag: bytes, key: str, value) -> bytes:
    """One attribute as a whole KeyValue field (``tag``: the field's, e.g. S_ATTR), as encode_span writes it
    (without touching its caches)."""
    return _field(tag, _key_value(key, value))


#: (name, id(kind)) -> the name and kind fields, encoded once (kinds are SpanKind singletons).
_heads: Dict[tuple, bytes] = {}


def span_head(name: str, kind) -> bytes:
    """A span's name and kind fields (kind: an SDK SpanKind)."""
    data = name.encode("utf-8")
    head = (_S_NAME + _len(len(data)) + data if data else b"") + _KIND[kind.value]
    if len(_heads) < MAX_CACHED_FIELDS:
        _heads[(name, id(kind))] = head
    return head


def encode_span(span: Union[Span, EncodedSpan]) -> bytes:
    """One Span message body (an EncodedSpan's as it came)."""
    if span.__class__ is EncodedSpan:
        return span.body
    parent_id = span.parent_id
    trace_id = span.trace_id
    parts = [_IDS(S_TRACE_ID, trace_id >> 64, trace_id & 0xFFFFFFFFFFFFFFFF, S_SPAN_ID, span.span_id)]
    trace_state = span.trace_state
    if trace_state:
        parts.append(_string(_S_TRACE_STATE, ",".join("%s=%s" % kv for kv in trace_state.items())))
    if parent_id:
        parts += (S_PARENT, parent_id.to_bytes(8, "big"))
    head = _heads.get((span.name, id(span.kind)))
    if head is None:
        head = span_head(span.name, span.kind)
    parts.append(head)
    start, end = span.start_time, span.end_time
    if start and end:
        parts.append(_TIMES(S_START, start, S_END, end))
    else:
        if start:
            parts += (S_START, _fixed64(start))
        if end:
            parts += (S_END, _fixed64(end))
    attributes = span.attributes
    if attributes:
        _attribute_fields(S_ATTR, attributes, parts)
    events = span.events
    if events:
        parts.extend(map(_event, events))
    links = span.links
    if links:
        parts.extend(map(_link, links))
    status = span.status
    if status is UNSET:
        parts.append(STATUS_UNSET)
    else:
        parts.append(_status(status))
    parts.append(_FLAGS_REMOTE if parent_id and span.parent_is_remote else FLAGS_LOCAL)
    return b"".join(parts)


def _resource(resource) -> bytes:
    return _attributes(b"\x0a", resource.attributes if resource is not None else None)


def _scope(scope) -> bytes:
    if scope is None:
        return b""
    return (_string(b"\x0a", scope.name) + _string(b"\x12", scope.version)
            + _attributes(b"\x1a", getattr(scope, "attributes", None)))


def encode_request(spans: Sequence[Union[Span, EncodedSpan]]) -> bytes:
    """An ExportTraceServiceRequest: spans grouped by resource, then scope, in first-seen order."""
    return _grouped(spans, encode_span)


# LogRecord fields (opentelemetry/proto/logs/v1/logs.proto).
_L_TIME = b"\x09"                  # 1, fixed64
_L_ATTR = b"\x32"                  # 6
_L_FLAGS = b"\x45"                 # 8, fixed32
_L_TRACE_ID = b"\x4a\x10"          # 9, bytes, 16
_L_SPAN_ID = b"\x52\x08"           # 10, bytes, 8
_L_OBSERVED = b"\x59"              # 11, fixed64
_L_EVENT_NAME = b"\x62"            # 12


def encode_log_event(event: LogEvent) -> bytes:
    """One LogRecord message body: an OpenTelemetry event, observed when it happened (kernel clock)."""
    stamp = _fixed64(event.time)
    parts = [_L_TIME, stamp]
    _attribute_fields(_L_ATTR, event.attributes, parts)
    if event.trace_flags:
        parts += (_L_FLAGS, _fixed32(event.trace_flags))
    if event.trace_id:
        parts += (_L_TRACE_ID, event.trace_id.to_bytes(16, "big"))
    if event.span_id:
        parts += (_L_SPAN_ID, event.span_id.to_bytes(8, "big"))
    parts += (_L_OBSERVED, stamp)
    parts.append(_string(_L_EVENT_NAME, event.event_name))
    return b"".join(parts)


def encode_logs_request(events: Sequence[LogEvent]) -> bytes:
    """An ExportLogsServiceRequest: events grouped by resource, then scope, in first-seen order."""
    return _grouped(events, encode_log_event)


def _grouped(items: Sequence, encode) -> bytes:
    """Export*ServiceRequest bytes: resource_* (1) { resource (1), scope_* (2) { scope (1), items (2),
    schema_url (3) }, schema_url (3) }, the same field numbers for spans and log records."""
    groups: Dict[int, tuple] = {}
    resource = scope = target = None
    small = _SMALL_LEN
    for item in items:
        if item.resource is not resource or item.instrumentation_scope is not scope or target is None:
            resource, scope = item.resource, item.instrumentation_scope   # a batch is mostly one group
            entry = groups.get(id(resource))
            if entry is None:
                entry = groups[id(resource)] = (resource, {})
            scope_entry = entry[1].get(id(scope))
            if scope_entry is None:
                scope_entry = entry[1][id(scope)] = (scope, [])
            target = scope_entry[1]
        body = encode(item)
        n = len(body)
        target.append(b"\x12" + small[n] if n < 128 else b"\x12" + varint(n))   # ScopeSpans.spans / ScopeLogs.log_records = 2
        target.append(body)
    out: List[bytes] = []
    for resource, scopes in groups.values():
        rs_parts = [_field(b"\x0a", _resource(resource))]            # Resource*.resource = 1
        for scope, encoded in scopes.values():
            ss = _field(b"\x0a", _scope(scope)) + b"".join(encoded)  # Scope*.scope = 1
            if scope is not None and scope.schema_url:
                ss += _string(b"\x1a", scope.schema_url)
            rs_parts.append(_field(b"\x12", ss))                   # Resource*.scope_* = 2
        if resource is not None and resource.schema_url:
            rs_parts.append(_string(b"\x1a", resource.schema_url))
        out.append(_field(b"\x0a", b"".join(rs_parts)))           # Request.resource_* = 1
    return b"".join(out)
