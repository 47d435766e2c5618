"""ReadableSpans -> OTLP ExportTraceServiceRequest bytes, about 3x faster than the official encoder.

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

Field numbers: opentelemetry/proto/{collector/trace,trace,common,resource}/v1/*.proto.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Sequence

_double = struct.Struct("<d").pack
_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_LEN = [bytes((n,)) for n in range(128)]


def _len(n: int) -> bytes:
    return _SMALL_LEN[n] if n < 128 else _varint(n)


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
        return _T_INT + _varint(value)
    if t is float:
        return _T_DOUBLE + _double(value)
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        data = value.encode("utf-8")
        return _T_STRING + _len(len(data)) + data
    if isinstance(value, int):
        return _T_INT + _varint(int(value))
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
    return tag + _varint(value) if value else b""


def _string(tag: bytes, value) -> bytes:
    if not value:
        return b""
    data = value.encode("utf-8")
    return tag + _len(len(data)) + data


# Span fields.
_S_TRACE_ID = b"\x0a\x10"          # 1, bytes, always 16 long
_S_SPAN_ID = b"\x12\x08"           # 2, bytes, 8
_S_TRACE_STATE = b"\x1a"           # 3
_S_PARENT = b"\x22\x08"            # 4, bytes, 8
_S_NAME = b"\x2a"                  # 5
_S_KIND = b"\x30"                  # 6, enum
_S_START = b"\x39"                 # 7, fixed64
_S_END = b"\x41"                   # 8, fixed64
_S_ATTR = b"\x4a"                  # 9
_S_DROPPED_ATTRS = b"\x50"         # 10
_S_EVENT = b"\x5a"                 # 11
_S_DROPPED_EVENTS = b"\x60"        # 12
_S_LINK = b"\x6a"                  # 13
_S_DROPPED_LINKS = b"\x70"         # 14
_S_STATUS = b"\x7a"                # 15
_S_FLAGS = b"\x85\x01"             # 16, fixed32
_FLAGS_LOCAL = _S_FLAGS + _fixed32(0x100)   # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_FLAGS_REMOTE = _S_FLAGS + _fixed32(0x300)  # ... | SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_KIND = [_S_KIND + bytes((k + 1,)) for k in range(5)]  # SDK SpanKind value -> proto enum (+1)


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


def _attribute_fields(tag: bytes, attributes, parts: list) -> None:
    """Append each attribute as a KeyValue field; the common value types inline (hot path)."""
    cache = _key_cache
    for key, value in attributes.items():
        k = cache.get(key)
        if k is None:
            k = _new_key(key)
        t = type(value)
        if t is str:
            data = value.encode("utf-8")
            n = len(data)
            av = (b"\x0a" + _SMALL_LEN[n] if n < 128 else b"\x0a" + _varint(n)) + data
        elif t is int:
            av = b"\x18" + (_SMALL_LEN[value] if 0 <= value < 128 else _varint(value))
        elif t is bool:
            av = b"\x10\x01" if value else b"\x10\x00"
        elif t is float:
            av = b"\x21" + _double(value)
        else:
            av = _any_value(value)
        n = len(av)
        kv = k + (b"\x12" + _SMALL_LEN[n] if n < 128 else b"\x12" + _varint(n)) + av
        n = len(kv)
        parts.append(tag + _SMALL_LEN[n] if n < 128 else tag + _varint(n))
        parts.append(kv)


def _repeated(parts: list, items, encode, dropped_tag: bytes, dropped) -> None:
    """Append a span's events or links, then how many were dropped (the field after them).

    Called only for a span that has some, so spans without pay nothing for it.
    """
    for item in items:
        parts.append(encode(item))
    if dropped:
        parts.append(_uint(dropped_tag, dropped))


def encode_span(span) -> bytes:
    """One Span message body (a span that carries its own, ``otlp_span``, as it is: assemble.otel)."""
    encoded = getattr(span, "otlp_span", None)
    if encoded is not None:
        return encoded
    ctx = span.context
    parent = span.parent
    parts = [_S_TRACE_ID, ctx.trace_id.to_bytes(16, "big"), _S_SPAN_ID, ctx.span_id.to_bytes(8, "big")]
    trace_state = ctx.trace_state
    if trace_state:
        parts.append(_string(_S_TRACE_STATE, ",".join("%s=%s" % kv for kv in trace_state.items())))
    if parent is not None:
        parts += (_S_PARENT, parent.span_id.to_bytes(8, "big"))
    name = span.name.encode("utf-8")
    if name:
        parts += (_S_NAME, _len(len(name)), name)
    parts.append(_KIND[span.kind.value])
    start, end = span.start_time, span.end_time
    if start:
        parts += (_S_START, _fixed64(start))
    if end:
        parts += (_S_END, _fixed64(end))
    attributes = span.attributes
    if attributes:
        _attribute_fields(_S_ATTR, attributes, parts)
    dropped = span.dropped_attributes
    if dropped:
        parts.append(_uint(_S_DROPPED_ATTRS, dropped))
    events = span.events
    if events:
        _repeated(parts, events, _event, _S_DROPPED_EVENTS, span.dropped_events)
    links = span.links
    if links:
        _repeated(parts, links, _link, _S_DROPPED_LINKS, span.dropped_links)
    status = span.status
    if status is not None:
        if status.description is None and status.status_code.value == 0:
            parts.append(b"\x7a\x00")
        else:
            parts.append(_status(status))
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


def _resource(resource) -> bytes:
    return _attributes(b"\x0a", resource.attributes if resource is not None else None)


def _scope(scope) -> bytes:
    if scope is None:
        return b""
    return (_string(b"\x0a", scope.name) + _string(b"\x12", scope.version)
            + _attributes(b"\x1a", getattr(scope, "attributes", None)))


def encode_request(spans: Sequence) -> bytes:
    """An ExportTraceServiceRequest: spans grouped by resource, then scope, in first-seen order."""
    groups: Dict[int, tuple] = {}
    for span in spans:
        resource = span.resource
        entry = groups.get(id(resource))
        if entry is None:
            entry = groups[id(resource)] = (resource, {})
        scope = span.instrumentation_scope
        scope_entry = entry[1].get(id(scope))
        if scope_entry is None:
            scope_entry = entry[1][id(scope)] = (scope, [])
        body = encode_span(span)
        scope_entry[1].append(b"\x12" + _len(len(body)) + body)   # ScopeSpans.spans = 2
    out: List[bytes] = []
    for resource, scopes in groups.values():
        rs_parts = [_field(b"\x0a", _resource(resource))]            # ResourceSpans.resource = 1
        for scope, encoded in scopes.values():
            ss = _field(b"\x0a", _scope(scope)) + b"".join(encoded)  # ScopeSpans.scope = 1
            if scope is not None and scope.schema_url:
                ss += _string(b"\x1a", scope.schema_url)
            rs_parts.append(_field(b"\x12", ss))                   # ResourceSpans.scope_spans = 2
        if resource is not None and resource.schema_url:
            rs_parts.append(_string(b"\x1a", resource.schema_url))
        out.append(_field(b"\x0a", b"".join(rs_parts)))           # Request.resource_spans = 1
    return b"".join(out)
