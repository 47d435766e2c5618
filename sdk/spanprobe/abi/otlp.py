"""The otel_span probe's payload: an OTLP ``ScopeSpans`` message, written by hand.

The SDK must not depend on protobuf or opentelemetry-proto, so this is the
few protobuf wire rules OTLP's trace messages need (varints, fixed64/32,
length-delimited fields), written in field-number order and leaving out
proto3 defaults the way protobuf's own serializer does: the bytes are what
``ScopeSpans.SerializeToString()`` gives for the same message (tests compare
them with the official SDK's encoder). Field numbers are those of
opentelemetry/proto/trace/v1/trace.proto and common/v1/common.proto.

Pieces are encoded separately (each attribute, event, link), so that a
caller cutting a span down to the probe's bound adds up lengths instead of
re-encoding.
"""

import struct

_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
_FIXED32 = struct.Struct("<I")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

# wire types
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def varint(n):
    """An unsigned varint (a negative int64 as its 64-bit two's complement, as protobuf writes it)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field, wire):
    return varint(field << 3 | wire)


def length_delimited(field, data):
    """Field ``field`` holding ``data`` (a string's UTF-8, bytes, or an encoded message)."""
    return _tag(field, _LEN) + varint(len(data)) + data


def _text(field, value):
    return length_delimited(field, value.encode("utf-8")) if value else b""


def _uint(field, value):
    return _tag(field, _VARINT) + varint(value) if value else b""


def _fixed64(field, value):
    return _tag(field, _I64) + _FIXED64.pack(value) if value else b""


def _fixed32(field, value):
    return _tag(field, _I32) + _FIXED32.pack(value) if value else b""


def _repeated(field, messages):
    return b"".join(length_delimited(field, m) for m in messages)


# --- common.proto ---------------------------------------------------------------------

def any_value(value):
    """An ``AnyValue`` message for an attribute value (None: an empty AnyValue).

    Raises ValueError for a value OTLP cannot carry (an int outside int64, an
    unknown type), as the official encoder does.
    """
    if value is None:
        return b""
    if value is True or value is False:
        return _tag(2, _VARINT) + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return length_delimited(1, value.encode("utf-8"))
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"integer {value} does not fit OTLP's int64")
        return _tag(3, _VARINT) + varint(value)
    if isinstance(value, float):
        return _tag(4, _I64) + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return length_delimited(7, value)
    if isinstance(value, (tuple, list)):
        return length_delimited(5, _repeated(1, [any_value(v) for v in value]))
    if isinstance(value, dict):
        return length_delimited(6, _repeated(1, [key_value(str(k), v) for k, v in value.items()]))
    raise ValueError(f"{type(value).__name__} is not an OTLP attribute value")


def key_value(key, value):
    """A ``KeyValue`` message. Raises ValueError as any_value() does."""
    return _text(1, key) + length_delimited(2, any_value(value))


def scope(name, version=None, attributes=()):
    """An ``InstrumentationScope`` message; ``attributes`` are encoded KeyValues."""
    return _text(1, name) + _text(2, version) + _repeated(3, attributes)


# --- trace.proto ----------------------------------------------------------------------

#: Span.kind: OpenTelemetry's SpanKind value plus one (SPAN_KIND_INTERNAL = 1).
KIND_OFFSET = 1
#: Span.flags bits 8 and 9: the parent's is-remote bit is known, and set.
FLAG_HAS_IS_REMOTE, FLAG_IS_REMOTE = 0x100, 0x200


def event(time_unix_nano, name, attributes=(), dropped_attributes=0):
    """A ``Span.Event`` message; ``attributes`` are encoded KeyValues."""
    return (_fixed64(1, time_unix_nano) + _text(2, name) + _repeated(3, attributes)
            + _uint(4, dropped_attributes))


def link(trace_id, span_id, trace_state="", attributes=(), dropped_attributes=0, flags=0):
    """A ``Span.Link`` message (ids as ints)."""
    return (length_delimited(1, trace_id.to_bytes(16, "big")) + length_delimited(2, span_id.to_bytes(8, "big"))
            + _text(3, trace_state) + _repeated(4, attributes) + _uint(5, dropped_attributes)
            + _fixed32(6, flags))


def status(code, message=None):
    """A ``Status`` message (code: 0 unset, 1 ok, 2 error)."""
    return _text(2, message) + _uint(3, code)


def span(*, trace_id, span_id, trace_state="", parent_span_id=0, name, kind, start, end, attributes=(),
         dropped_attributes=0, events=(), dropped_events=0, links=(), dropped_links=0, status_message=b"",
         flags=0):
    """A ``Span`` message. ``attributes``, ``events``, ``links``: encoded messages; ``status_message``:
    an encoded Status (always present, as the official encoder writes it)."""
    return (length_delimited(1, trace_id.to_bytes(16, "big")) + length_delimited(2, span_id.to_bytes(8, "big"))
            + _text(3, trace_state)
            + (length_delimited(4, parent_span_id.to_bytes(8, "big")) if parent_span_id else b"")
            + _text(5, name) + _uint(6, kind) + _fixed64(7, start) + _fixed64(8, end)
            + _repeated(9, attributes) + _uint(10, dropped_attributes)
            + _repeated(11, events) + _uint(12, dropped_events)
            + _repeated(13, links) + _uint(14, dropped_links)
            + length_delimited(15, status_message) + _fixed32(16, flags))


def scope_spans(scope_message, spans, schema_url=None):
    """A ``ScopeSpans`` message: an encoded scope, encoded spans, the scope's schema URL."""
    return length_delimited(1, scope_message) + _repeated(2, spans) + _text(3, schema_url)
