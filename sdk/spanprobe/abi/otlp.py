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

_FIXED64 = struct.Struct("<Q").pack
_DOUBLE = struct.Struct("<d").pack
_FIXED32 = struct.Struct("<I").pack
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
#: One-byte varints: most lengths, tags and small counts (a Python call costs ~60 ns here,
#: and a span has dozens of these, so the common cases are table lookups).
_SMALL = [bytes((i,)) for i in range(128)]


def varint(n):
    """An unsigned varint (a negative int64 as its 64-bit two's complement, as protobuf writes it)."""
    if 0 <= n < 128:
        return _SMALL[n]
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def length_delimited(tag, data):
    """A length-delimited field: ``tag`` (its encoded key, e.g. b"\\x0a" for field 1) then ``data``."""
    n = len(data)
    return tag + (_SMALL[n] if n < 128 else varint(n)) + data


def _text(tag, value):
    return length_delimited(tag, value.encode("utf-8")) if value else b""


def _uint(tag, value):
    return tag + varint(value) if value else b""


def _repeated(tag, messages):
    return b"".join([length_delimited(tag, m) for m in messages])


# --- common.proto ---------------------------------------------------------------------

_KEYS = {}
_MAX_KEYS = 4096


def any_value(value):
    """An ``AnyValue`` message for an attribute value (None: an empty AnyValue).

    Raises ValueError for a value OTLP cannot carry (an int outside int64, an
    unknown type), as the official encoder does.
    """
    t = type(value)
    if t is str:
        return length_delimited(b"\x0a", value.encode("utf-8"))
    if t is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if t is int and _INT64_MIN <= value <= _INT64_MAX:
        return b"\x18" + varint(value)
    if t is float:
        return b"\x21" + _DOUBLE(value)
    return _any_other(value)


def _any_other(value):
    if value is None:
        return b""
    if value is True or value is False:
        return any_value(bool(value))
    if isinstance(value, str):
        return any_value(str(value))
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"integer {value} does not fit OTLP's int64")
        return b"\x18" + varint(int(value))
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return length_delimited(b"\x3a", value)
    if isinstance(value, (tuple, list)):
        return length_delimited(b"\x2a", _repeated(b"\x0a", [any_value(v) for v in value]))
    if isinstance(value, dict):
        return length_delimited(b"\x32", _repeated(b"\x0a", [key_value(str(k), v) for k, v in value.items()]))
    raise ValueError(f"{type(value).__name__} is not an OTLP attribute value")


def key_value(key, value):
    """A ``KeyValue`` message. Raises ValueError as any_value() does."""
    head = _KEYS.get(key)
    if head is None:
        head = _text(b"\x0a", key)
        if len(_KEYS) < _MAX_KEYS:
            _KEYS[key] = head
    return head + length_delimited(b"\x12", any_value(value))


def key_values(attributes, on_error):
    """Encoded KeyValues of a mapping's items; ``on_error(key, exc)`` for values OTLP cannot carry.

    key_value() inlined for the common value types: this runs for every
    attribute of every span.
    """
    out = []
    append = out.append
    keys = _KEYS
    for key, value in attributes.items():
        head = keys.get(key)
        if head is None:
            head = _text(b"\x0a", key)
            if len(keys) < _MAX_KEYS:
                keys[key] = head
        t = type(value)
        if t is str:
            data = value.encode("utf-8")
            n = len(data)
            if n < 126:
                append(head + b"\x12" + _SMALL[n + 2] + b"\x0a" + _SMALL[n] + data)
                continue
        elif t is int and 0 <= value <= _INT64_MAX:
            data = varint(value)
            append(head + b"\x12" + _SMALL[len(data) + 1] + b"\x18" + data)
            continue
        elif t is float:
            append(head + b"\x12\x09\x21" + _DOUBLE(value))
            continue
        elif t is bool:
            append(head + (b"\x12\x02\x10\x01" if value else b"\x12\x02\x10\x00"))
            continue
        try:
            append(head + length_delimited(b"\x12", any_value(value)))
        except ValueError as exc:
            on_error(key, exc)
    return out


def scope(name, version=None, attributes=()):
    """An ``InstrumentationScope`` message; ``attributes`` are encoded KeyValues."""
    return _text(b"\x0a", name) + _text(b"\x12", version) + _repeated(b"\x1a", attributes)


# --- trace.proto ----------------------------------------------------------------------

#: Span.kind: OpenTelemetry's SpanKind value plus one (SPAN_KIND_INTERNAL = 1).
KIND_OFFSET = 1
#: Span.flags bits 8 and 9: the parent's is-remote bit is known, and set.
FLAG_HAS_IS_REMOTE, FLAG_IS_REMOTE = 0x100, 0x200


def event(time_unix_nano, name, attributes=(), dropped_attributes=0):
    """A ``Span.Event`` message; ``attributes`` are encoded KeyValues."""
    return ((b"\x09" + _FIXED64(time_unix_nano) if time_unix_nano else b"") + _text(b"\x12", name)
            + _repeated(b"\x1a", attributes) + _uint(b"\x20", dropped_attributes))


def link(trace_id, span_id, trace_state="", attributes=(), dropped_attributes=0, flags=0):
    """A ``Span.Link`` message (ids as ints)."""
    return (b"\x0a\x10" + trace_id.to_bytes(16, "big") + b"\x12\x08" + span_id.to_bytes(8, "big")
            + _text(b"\x1a", trace_state) + _repeated(b"\x22", attributes) + _uint(b"\x28", dropped_attributes)
            + (b"\x35" + _FIXED32(flags) if flags else b""))


def status(code, message=None):
    """A ``Status`` message (code: 0 unset, 1 ok, 2 error)."""
    return _text(b"\x12", message) + _uint(b"\x18", code)


def span(trace_id, span_id, trace_state, parent_span_id, name, kind, start, end, attributes, dropped_attributes,
         events, dropped_events, links, dropped_links, status_message, flags):
    """A ``Span`` message. ``attributes``, ``events``, ``links``: encoded messages; ``status_message``:
    an encoded Status (always present, as the official encoder writes it).

    Written as appends to one list, field by field: this runs once per span while traced.
    """
    parts = [b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id.to_bytes(8, "big")]
    add = parts.append
    if trace_state:
        add(_text(b"\x1a", trace_state))
    if parent_span_id:
        add(b"\x22\x08" + parent_span_id.to_bytes(8, "big"))
    if name:
        add(_text(b"\x2a", name))
    if kind:
        add(b"\x30" + varint(kind))
    if start:
        add(b"\x39" + _FIXED64(start))
    if end:
        add(b"\x41" + _FIXED64(end))
    if attributes:
        add(_repeated(b"\x4a", attributes))
    if dropped_attributes:
        add(b"\x50" + varint(dropped_attributes))
    if events:
        add(_repeated(b"\x5a", events))
    if dropped_events:
        add(b"\x60" + varint(dropped_events))
    if links:
        add(_repeated(b"\x6a", links))
    if dropped_links:
        add(b"\x70" + varint(dropped_links))
    add(length_delimited(b"\x7a", status_message))
    if flags:
        add(b"\x85\x01" + _FIXED32(flags))
    return b"".join(parts)


def scope_spans(scope_message, spans, schema_url=None):
    """A ``ScopeSpans`` message: an encoded scope, encoded spans, the scope's schema URL."""
    return length_delimited(b"\x0a", scope_message) + _repeated(b"\x12", spans) + _text(b"\x1a", schema_url)
