"""Common span records straight to OTLP Span bytes, with no Span object in between.

When OTLP is the tracer's only span exporter, the Span that SpanBuilder makes
of each record (assemble.telemetry) is only ever read by export.otlp.wire to
write its bytes: at 100,000 spans/s, decoding, building and encoding cost
~4.5 µs a span. Here, once per span type, Python is written for its shape
(decode.CommonRecord: where each field is, which records are common) and the
constant parts are encoded ahead as ready bytes: the name and kind, the
code.* attributes, each attribute's key and tags, the status and flags. Per
record: one unpack, the variable parts spliced in. The result is an
EncodedSpan, which wire passes through as it is; its bytes are those
encode_span writes for the Span SpanBuilder builds from the same record
(tests/tracer/export/test_otlp_records.py, against the official encoder).

A record that is not common (a failed read or conversion, an error status, a
cut text, a u64 above 2**63-1) or whose span has events or plain hits waiting
for it goes the usual way: ``encode`` hands it to ``otherwise`` (the
decoder's decode, which the builder then builds), or returns None.

``span_path`` is what the session gives decode.Bindings when OTLP is the
only span exporter.
"""

from __future__ import annotations

import struct
import weakref
from typing import Callable, Dict, Optional

from spanprobe.abi.protocol import TRACE_FLAGS_MASK

from ...assemble import SpanBuilder
from ...assemble.telemetry import EncodedSpan
from ...decode import SpanDecoder
from ...decode.values import INT64_MAX
from .wire import (FLAGS_LOCAL, S_ATTR, S_END, S_PARENT, S_SPAN_ID, S_START, S_TRACE_ID, STATUS_UNSET,
                   attribute_field, span_head, varint)

#: Distinct values of an integer attribute whose whole fields are kept (a status code, a thread id
#: repeat; an id does not: past this, its fields are made per record).
MAX_CACHED_INTS = 256

_IDS = struct.Struct(">%dsQQ%dsQ" % (len(S_TRACE_ID), len(S_SPAN_ID)))
_IDS_PARENT = struct.Struct(">%dsQQ%dsQ%dsQ" % (len(S_TRACE_ID), len(S_SPAN_ID), len(S_PARENT)))


def _cut(field: bytes, n: int) -> bytes:
    """``field`` without its last ``n`` bytes: what comes before an ``n``-byte value."""
    return field[:len(field) - n]


def _int_fields(key: str):
    """(cache, make) for an integer attribute: its whole field by value."""
    # What comes before an n-byte varint in the field, by n (1-10): wire's field for a value that long, cut.
    prefixes = [b""] + [_cut(attribute_field(S_ATTR, key, 1 << 7 * (n - 1)), n) for n in range(1, 11)]
    cache: Dict[int, bytes] = {}

    def make(value: int) -> bytes:
        v = varint(value)
        field = prefixes[len(v)] + v
        if len(cache) < MAX_CACHED_INTS:
            cache[value] = field
        return field
    return cache, make


def _text_field(key: str, string_max: int):
    """(prefixes, make) for a text attribute: what comes before its UTF-8 bytes in its field, by length
    (up to ``string_max``), and the whole field of any text."""
    prefixes = [_cut(attribute_field(S_ATTR, key, "x" * n), n) for n in range(string_max + 1)]
    return prefixes, lambda text: attribute_field(S_ATTR, key, text)


class SpanRecordEncoder:
    """OTLP Span bytes (in an EncodedSpan) from a span type's common records; see the module."""

    def __init__(self, decoder: SpanDecoder, builder: SpanBuilder, otherwise: Optional[Callable] = None):
        c = decoder.common
        d = decoder.span
        kind, scope = builder.kind_scope(d)
        # The attributes in SpanBuilder.span's order: code.*, the probes' (a name given twice keeps its
        # first place and last value), thread.id. Each: ("bytes", field) or ("attr", k) or ("thread",).
        order: Dict[str, tuple] = {key: ("bytes", attribute_field(S_ATTR, key, value))
                                   for key, value in d.code_attributes.items()}
        for k, a in enumerate(c.attrs):
            order[a.name] = ("attr", k)
        order["thread.id"] = ("thread",)
        ns: dict = {"unpack": c.unpack, "waits": builder.waits_for, "to_wall": builder.to_wall,
                    "resource_for": builder.resource_for, "scope": scope, "EncodedSpan": EncodedSpan,
                    "IDS": _IDS.pack, "IDS_PARENT": _IDS_PARENT.pack, "T_TRACE": S_TRACE_ID, "T_SPAN": S_SPAN_ID,
                    "T_PARENT": S_PARENT, "TIMES": struct.Struct("<%dsQ%dsQ" % (
                        len(span_head(d.name, kind)) + len(S_START), len(S_END))).pack,
                    "HEAD": span_head(d.name, kind) + S_START, "T_END": S_END,
                    "otherwise": otherwise or (lambda rec, pid, tid: None)}
        lines = ["def encode(rec, pid, tid):",
                 "    f = unpack(rec, 0)",
                 "    if %s:" % c.uncommon,
                 "        return otherwise(rec, pid, tid)"]
        for a in c.attrs:
            if a.u64:       # above 2**63-1: a decimal string
                lines += ["    if f[%d] > %d:" % (a.at, INT64_MAX), "        return otherwise(rec, pid, tid)"]
        lines += ["    span_id = f[%d]" % c.span_id_at,
                  "    if waits(pid, span_id, f[%d]):" % c.start_tid_at,
                  "        return otherwise(rec, pid, tid)"]
        parts = []
        for key, how in order.items():
            if how[0] == "bytes":
                if parts and parts[-1][0] == "const":     # neighbouring constants: one piece
                    parts[-1] = ("const", parts[-1][1] + how[1])
                else:
                    parts.append(("const", how[1]))
                continue
            var = "a%d" % len(parts)
            if how[0] == "thread":
                lines += self._int_lines(ns, var, key, "f[%d]" % c.start_tid_at)
            else:
                a = c.attrs[how[1]]
                lines += self._attr_lines(ns, var, key, a, c)
            parts.append(("var", var))
        names = []
        for i, (what, value) in enumerate(parts):
            if what == "const":
                ns["C%d" % i] = value
                names.append("C%d" % i)
            else:
                names.append(value)
        names.append("TAIL")
        ns["TAIL"] = STATUS_UNSET + FLAGS_LOCAL
        lines += [
            "    end_ns = f[%d]" % c.end_ns_at,
            "    end = to_wall(end_ns)",
            "    start = end - (end_ns - f[%d])" % c.start_ns_at,   # to_wall adds an offset
            "    if start <= 0:",
            "        return otherwise(rec, pid, tid)",
            "    parent = f[%d]" % c.parent_id_at,
            "    if parent:",
            "        ids = IDS_PARENT(T_TRACE, f[%d], f[%d], T_SPAN, span_id, T_PARENT, parent)" % (
                c.trace_hi_at, c.trace_lo_at),
            "    else:",
            "        ids = IDS(T_TRACE, f[%d], f[%d], T_SPAN, span_id)" % (c.trace_hi_at, c.trace_lo_at),
            "    return EncodedSpan(b''.join((ids, TIMES(HEAD, start, T_END, end), %s)), resource_for(pid), scope, "
            "f[%d] & %d)" % (", ".join(names), c.sflags_at, TRACE_FLAGS_MASK),
        ]
        self.source = "\n".join(lines)
        exec(self.source, ns)
        #: encode(rec, pid, tid) -> EncodedSpan; a record that must go the usual way: otherwise(rec, pid, tid)
        self.encode: Callable[[bytes, int, int], Optional[EncodedSpan]] = ns["encode"]

    @staticmethod
    def _int_lines(ns: dict, var: str, key: str, expression: str) -> list:
        ns["IC" + var], ns["IM" + var] = _int_fields(key)
        return ["    x = %s" % expression,
                "    %s = IC%s.get(x)" % (var, var),
                "    if %s is None:" % var,
                "        %s = IM%s(x)" % (var, var)]

    def _attr_lines(self, ns: dict, var: str, key: str, a, c) -> list:
        if a.field.type == "bool":
            ns["B" + var] = (attribute_field(S_ATTR, key, False), attribute_field(S_ATTR, key, True))
            return ["    %s = B%s[%s]" % (var, var, a.expression)]
        if a.expression is not None:
            return self._int_lines(ns, var, key, a.expression)
        if a.field.type == "str":
            ns["P" + var], ns["M" + var] = _text_field(key, c.string_max)
            # ASCII goes out as captured (what the decoder's text re-encodes to); the rest as decoded.
            return ["    " + line for line in c.text_lines(a, "d = {}", ["return otherwise(rec, pid, tid)"])] + [
                "    if d.isascii():",
                "        %s = P%s[len(d)] + d" % (var, var),
                "    else:",
                "        %s = M%s(d.decode('utf-8', 'replace'))" % (var, var)]
        # Other types (f64, bytes): the decoder's value, encoded by wire.
        ns["D" + var] = a.decoder
        ns["F" + var] = lambda value, key=key: attribute_field(S_ATTR, key, value)
        return ["    v, cut = D%s(rec, f[%d])" % (var, a.at),
                "    if cut:",
                "        return otherwise(rec, pid, tid)",
                "    %s = F%s(v)" % (var, var)]



def span_path(builder: SpanBuilder) -> Callable[[SpanDecoder], Callable]:
    """For decode.Bindings: a span decoder -> its records' decode, straight to OTLP bytes where they are
    common (the decoder's own decode otherwise); one encoder per decoder, kept while the decoder lives."""
    encoders: "weakref.WeakKeyDictionary[SpanDecoder, SpanRecordEncoder]" = weakref.WeakKeyDictionary()

    def for_decoder(decoder: SpanDecoder) -> Callable:
        encoder = encoders.get(decoder)
        if encoder is None:
            encoder = encoders[decoder] = SpanRecordEncoder(decoder, builder, decoder.decode)
        return encoder.encode
    return for_decoder
