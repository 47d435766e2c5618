"""The otel_span probe's payload: an OTLP ``ScopeSpans`` message, written by hand.

The SDK must not depend on protobuf or opentelemetry-proto, so this is the
few protobuf wire rules OTLP's trace messages need (varints, fixed64/32,
length-delimited fields), written in field-number order and leaving out
proto3 defaults the way protobuf's own serializer does: the bytes are what
``ScopeSpans.SerializeToString()`` gives for the same message (tests compare
them with the official SDK's encoder). Field numbers are those of
opentelemetry/proto/trace/v1/trace.proto and common/v1/common.proto.

Repeated fields (attributes, events, links) are handed over already framed
as their parent's fields and joined, so that a caller can encode an event
once when it is added, keep a tracer's scope bytes, and cut a span down to
the probe's bound by dropping whole fields instead of re-encoding. The hot
paths (key_value_fields, event_field, scope_span) are written out inline:
each Python call costs ~50-100 ns here and a span makes dozens of them.
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
    if 0 < n < 16384:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
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
    # str.encode, not value.encode: a str subclass's text is its data, as protobuf takes it
    return length_delimited(tag, str.encode(value, "utf-8")) if value else b""


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
        return any_value(str.__str__(value))  # its data, whatever its own __str__ says (as protobuf)
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


def _key_head(key):
    """A KeyValue up to its value: the key field and the value field's tag, cached per key
    (instrumentations use a few keys over and over)."""
    head = _text(b"\x0a", key) + b"\x12"
    if len(_KEYS) < _MAX_KEYS:
        _KEYS[key] = head
    return head


def key_value(key, value):
    """A ``KeyValue`` message. Raises ValueError as any_value() does."""
    return (_KEYS.get(key) or _key_head(key)) + length_delimited(b"", any_value(value))


#: AnyValue string_value heads with their length, framed: (len + 2, tag, len) for a string of ``len`` bytes.
_STRING_HEADS = [bytes((n + 2, 0x0A, n)) for n in range(126)]
#: Framed KeyValue fields of (key, str value) pairs, without their field tag: instrumentations
#: repeat the same pairs span after span (a method, a host, a route). Bounded: emptied when full,
#: so pairs that never repeat (a URL's path, a peer address) cannot crowd out those that do.
#: Only str values: as dict keys 1, 1.0 and True are one, though each encodes differently.
STR_FIELDS = {}
MAX_STR_FIELDS = 1024


def key_value_fields(tag, attributes, on_error):
    """A mapping's items as repeated KeyValue fields ``tag``, joined; ``on_error(key, exc)`` for a value
    OTLP cannot carry (left out).

    Written as appends to one list, the common value types inline: this runs for
    every attribute of every span.
    """
    parts = []
    add = parts.append
    keys = _KEYS
    small = _SMALL
    str_fields = STR_FIELDS
    for key, value in attributes.items():
        try:  # a ValueError (UnicodeEncodeError: a lone surrogate in the key or a str value) leaves the item out
            t = type(value)
            if t is str:
                field = str_fields.get((key, value))
                if field is not None:
                    add(tag)
                    add(field)
                    continue
                head = keys.get(key) or _key_head(key)
                data = value.encode("utf-8")
                n = len(data)
                m = len(head) + n + 3
                if m < 128:
                    field = small[m] + head + _STRING_HEADS[n] + data
                    if len(str_fields) >= MAX_STR_FIELDS:
                        str_fields.clear()
                    str_fields[key, value] = field
                    add(tag)
                    add(field)
                    continue
            else:
                head = keys.get(key) or _key_head(key)
                if t is int and 0 <= value <= _INT64_MAX:
                    data = (small[value] if value < 128 else bytes(((value & 0x7F) | 0x80, value >> 7))
                            if value < 16384 else varint(value))
                    n = len(data)
                    m = len(head) + n + 2
                    if m < 128:
                        add(tag + small[m] + head + small[n + 1] + b"\x18" + data)
                        continue
                elif t is float:
                    m = len(head) + 10
                    if m < 128:
                        add(tag + small[m] + head + b"\x09\x21" + _DOUBLE(value))
                        continue
            value = length_delimited(b"", any_value(value))
        except ValueError as exc:
            on_error(key, exc)
            continue
        add(length_delimited(tag, head + value))
    return b"".join(parts)


def scope(name, version=None, attributes=b""):
    """An ``InstrumentationScope`` message; ``attributes``: its KeyValue fields (tag SCOPE_ATTRIBUTES)."""
    return _text(b"\x0a", name) + _text(b"\x12", version) + attributes


# --- trace.proto ----------------------------------------------------------------------

#: Field tags of the repeated KeyValue fields: InstrumentationScope's, Span's, Span.Event's, Span.Link's.
SCOPE_ATTRIBUTES, SPAN_ATTRIBUTES, EVENT_ATTRIBUTES, LINK_ATTRIBUTES = b"\x1a", b"\x4a", b"\x1a", b"\x22"
#: Field tags of Span's events and links.
SPAN_EVENTS, SPAN_LINKS = b"\x5a", b"\x6a"
#: Span.kind: OpenTelemetry's SpanKind value plus one (SPAN_KIND_INTERNAL = 1).
KIND_OFFSET = 1
#: Span.flags bits 8 and 9: the parent's is-remote bit is known, and set.
FLAG_HAS_IS_REMOTE, FLAG_IS_REMOTE = 0x100, 0x200


def event_field(time_unix_nano, name, attributes, dropped_attributes, on_error):
    """A ``Span.Event`` message as the Span's field (tag SPAN_EVENTS); ``attributes``: a mapping, as
    for key_value_fields(), ``on_error`` too. Written out inline: this runs for every event."""
    data = name.encode("utf-8") if type(name) is str else b""
    n = len(data)
    message = ((b"\x09" + _FIXED64(time_unix_nano) if time_unix_nano else b"")
               + (b"\x12" + _SMALL[n] + data if 0 < n < 128 else _text(b"\x12", name))
               + (key_value_fields(EVENT_ATTRIBUTES, attributes, on_error) if attributes else b"")
               + (b"\x20" + varint(dropped_attributes) if dropped_attributes else b""))
    n = len(message)
    return SPAN_EVENTS + (_SMALL[n] if n < 128 else varint(n)) + message


def link(trace_id, span_id, trace_state="", attributes=b"", dropped_attributes=0, flags=0):
    """A ``Span.Link`` message (ids as ints); ``attributes``: its KeyValue fields (tag LINK_ATTRIBUTES)."""
    return (b"\x0a\x10" + trace_id.to_bytes(16, "big") + b"\x12\x08" + span_id.to_bytes(8, "big")
            + _text(b"\x1a", trace_state) + attributes + _uint(b"\x28", dropped_attributes)
            + (b"\x35" + _FIXED32(flags) if flags else b""))


def status_field(code, message=None):
    """A ``Status`` message (code: 0 unset, 1 ok, 2 error) as the Span's field."""
    return length_delimited(b"\x7a", _text(b"\x12", message) + _uint(b"\x18", code))


#: The Span's status field when it is unset (the official encoder writes it all the same).
NO_STATUS = status_field(0)


_TIMES = struct.Struct("<BBBQBQ").pack
_IDS = struct.Struct(">2sQQ2sQ").pack
#: The ids with a parent span id (no trace state between them).
_IDS_PARENT = struct.Struct(">2sQQ2sQ2sQ").pack
_LOW64 = (1 << 64) - 1


def scope_span(scope_head, scope_tail, trace_id, span_id, trace_state, parent_span_id, name, kind, start, end,
               attributes, dropped_attributes, events, dropped_events, links, dropped_links, status, flags):
    """A ``ScopeSpans`` message holding one ``Span``: scope_spans_head(), the Span, scope_spans_tail().

    ``attributes``, ``events``, ``links``: the Span's fields (tags SPAN_ATTRIBUTES, SPAN_EVENTS,
    SPAN_LINKS), joined; ``status``: a status_field() (always present, as the official
    encoder writes it). Written as appends to one list, field by field, the usual cases in single
    pack calls: this runs once per span while traced.
    """
    if parent_span_id and not trace_state:
        parts = [_IDS_PARENT(b"\x0a\x10", trace_id >> 64, trace_id & _LOW64, b"\x12\x08", span_id, b"\x22\x08",
                             parent_span_id)]
        add = parts.append
    else:
        parts = [_IDS(b"\x0a\x10", trace_id >> 64, trace_id & _LOW64, b"\x12\x08", span_id)]
        add = parts.append
        if trace_state:
            add(_text(b"\x1a", trace_state))
        if parent_span_id:
            add(b"\x22\x08" + parent_span_id.to_bytes(8, "big"))
    if name:
        data = name.encode("utf-8")
        n = len(data)
        add(b"\x2a" + (_SMALL[n] if n < 128 else varint(n)) + data)
    if 0 < kind < 128 and start and end:
        add(_TIMES(0x30, kind, 0x39, start, 0x41, end))
    else:
        if kind:
            add(b"\x30" + varint(kind))
        if start:
            add(b"\x39" + _FIXED64(start))
        if end:
            add(b"\x41" + _FIXED64(end))
    add(attributes)
    if dropped_attributes:
        add(b"\x50" + varint(dropped_attributes))
    add(events)
    if dropped_events:
        add(b"\x60" + varint(dropped_events))
    add(links)
    if dropped_links:
        add(b"\x70" + varint(dropped_links))
    add(status)
    if flags:
        add(b"\x85\x01" + _FIXED32(flags))
    body = b"".join(parts)
    n = len(body)
    return scope_head + b"\x12" + (bytes(((n & 0x7F) | 0x80, n >> 7)) if 128 <= n < 16384 else varint(n)) + body + scope_tail


def scope_spans_head(scope_message):
    """What a ``ScopeSpans`` message starts with: its scope field (the same for all spans of a tracer)."""
    return length_delimited(b"\x0a", scope_message)


def scope_spans_tail(schema_url):
    """What a ``ScopeSpans`` message ends with: its schema URL field."""
    return _text(b"\x1a", schema_url)
