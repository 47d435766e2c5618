"""Span and point decoders: one per span type or point type of a plan, at its shape's offsets.

A SpanDecoder reads a span record (kernel.layout's offsets: the fixed part,
the start struct copied whole, the end words) into a SpanRecord: ids and
times from the protocol's fixed arguments, attributes after them, named as
the schema names them. A PointDecoder does the same for event and plain
probe records. Which fixed argument is where comes from
spanprobe.abi.protocol.FIXED_ARGS.

A span record is unpacked once, whole. The common record (every value
delivered, status ok) is decoded by Python written for its span shape when
the decoder is made, the tracer's hottest loop at 100,000 spans/s; any
other goes through decode_careful, the reference the fast path is tested
against. Where the common record's fields are, and which records are common,
is stated once, in CommonRecord, for this fast path and export.otlp.records'
(OTLP bytes straight from the record).

Decoders depend only on the plan, so DecoderCache builds them once per plan,
however many processes it is attached in.
"""

from __future__ import annotations

import struct
import weakref
from typing import Callable, Dict, List, NamedTuple, Optional, Union

from spanprobe.abi.protocol import (FIXED_ARGS, FLAG_CONVERSION_FAILED, ROLE_EVENT, ROLE_OTEL_SPAN, ROLE_SPAN_END,
                                    ROLE_SPAN_START, TRACE_FLAGS_MASK)

from ..kernel import PointType, ProviderPlan, SpanType
from ..kernel.layout import HDR_SIZE, POINT_FIXED, POINT_WORDS_AT, SPAN_FIXED, SPAN_START_AT, ArgField
from .records import OtelSpanRecord, PointRecord, SpanRecord, ValueNotes
from .values import INT64_MAX, INT_TYPES, AttrDecoder, value_decoder


def _positions(role: str) -> Dict[str, int]:
    """Fixed argument name -> its position among the probe's arguments."""
    return {name: i for i, (name, _) in enumerate(FIXED_ARGS[role])}


_START, _END, _EVENT = (_positions(role) for role in (ROLE_SPAN_START, ROLE_SPAN_END, ROLE_EVENT))
# Positions the hot paths below index argument words with.
_S_SPAN, _S_PARENT, _S_TRACE_HI, _S_TRACE_LO, _S_FLAGS = (
    _START[n] for n in ("span_id", "parent_span_id", "trace_id_high", "trace_id_low", "flags"))
_E_STATUS, _E_TYPE, _E_MESSAGE, _E_FLAGS = (_END[n] for n in ("status", "error_type", "error_message", "flags"))
_V_SPAN, _V_TRACE_HI, _V_TRACE_LO, _V_FLAGS = (_EVENT[n] for n in ("span_id", "trace_id_high", "trace_id_low", "flags"))


class SpanDecoder:
    """Decodes span records of one span type (its shape's offsets, its attribute names)."""

    def __init__(self, span: SpanType, string_max: int):
        s = span.shape
        self.span = span
        n_start, n_end = len(s.start), len(s.end)
        gap = s.end_words_at - (SPAN_START_AT + 16 + 8 * n_start)
        # The whole record in one unpack: the fixed part, the start words, (their string slots,) the end words.
        self._record = struct.Struct("<%dx%s%dQ%dx%dQ" % (HDR_SIZE, SPAN_FIXED.format[1:], n_start, gap, n_end))
        assert SPAN_START_AT + 16 == HDR_SIZE + SPAN_FIXED.size
        # Where each fixed argument is among the unpacked fields (5 fixed fields come first).
        e = 5 + n_start
        self._at = (5 + _S_FLAGS, e + _E_FLAGS, e + _E_STATUS, e + _E_TYPE, e + _E_MESSAGE, 5 + _S_TRACE_HI,
                    5 + _S_TRACE_LO, 5 + _S_SPAN, 5 + _S_PARENT)
        self._start_attrs = AttrDecoder(s.start_fields, [n for n, _ in span.start.args], len(_START), string_max, 5)
        self._end_attrs = AttrDecoder(s.end_fields, [n for n, _ in span.end.args], len(_END), string_max, e)
        self._err_type = value_decoder(s.end_fields[_E_TYPE], string_max)
        self._err_msg = value_decoder(s.end_fields[_E_MESSAGE], string_max)
        #: how Python written for this shape reads its common record (this decode, export.otlp.records)
        self.common = CommonRecord(self, string_max)
        #: decode(rec, pid, tid) -> SpanRecord: written for this shape; uncommon records go to decode_careful
        self.decode = _fast_path(self, self.common)

    def decode_careful(self, rec: bytes, pid: int, tid: int) -> SpanRecord:
        """Any span record: failed reads and conversions noted, an error's type and message read."""
        f = self._record.unpack_from(rec, 0)
        end_ns, end_fail, start_ns, start_tid, start_fail = f[:5]
        sflags_at, eflags_at, status_at, type_at, message_at, hi_at, lo_at, span_at, parent_at = self._at
        sflags, eflags = f[sflags_at] & 0xFFFFFFFF, f[eflags_at] & 0xFFFFFFFF
        attrs: dict = {}
        notes = None
        if self._start_attrs.items:
            notes = self._start_attrs.decode(rec, f, start_fail, sflags >> FLAG_CONVERSION_FAILED, attrs, None)
        if self._end_attrs.items:
            notes = self._end_attrs.decode(rec, f, end_fail, eflags >> FLAG_CONVERSION_FAILED, attrs, notes)
        status = f[status_at] & 0xFF
        if status:
            error_type = self._err_type(rec, f[type_at])[0] if not end_fail >> _E_TYPE & 1 else ""
            error_message = self._err_msg(rec, f[message_at])[0] if not end_fail >> _E_MESSAGE & 1 else ""
        else:
            error_type = error_message = ""
        return SpanRecord(self.span, pid, tid, start_tid, start_ns, end_ns, (f[hi_at] << 64) | f[lo_at],
                          f[span_at], f[parent_at], sflags & TRACE_FLAGS_MASK, status, error_type, error_message,
                          attrs, notes)


def _value_expression(f: ArgField, at: int) -> Optional[str]:
    """Python source for an integer or bool argument's value from word ``f[at]``; None for other types."""
    if f.type in INT_TYPES:
        size, signed = INT_TYPES[f.type]
        bits = 8 * min(size, f.loc.size)
        mask, sign = (1 << bits) - 1, 1 << (bits - 1)
        if signed:
            return "((f[%d] & %d) ^ %d) - %d" % (at, mask, sign, sign)
        if bits == 64:
            return "(f[%d] if f[%d] <= %d else str(f[%d]))" % (at, at, INT64_MAX, at)
        return "f[%d] & %d" % (at, mask)
    if f.type == "bool":
        return "f[%d] & 255 != 0" % at
    return None


class CommonAttr(NamedTuple):
    """One attribute of a span type's common record, as Python written for the shape reads it."""

    name: str
    field: ArgField
    at: int                      # its word among the unpacked fields ``f``
    expression: Optional[str]    # integers and bools: source for the value from ``f``; else None
    decoder: Callable            # decode.values' decoder (text and others; what the careful path uses)

    @property
    def u64(self) -> bool:
        """A u64, whose values above 2**63-1 come out as decimal strings."""
        return self.field.type in INT_TYPES and 8 * min(INT_TYPES[self.field.type][0], self.field.loc.size) == 64 \
            and not INT_TYPES[self.field.type][1]


class CommonRecord:
    """What Python written per span shape needs to read a span type's common record (every value
    delivered, status ok), stated once for the two fast paths: SpanDecoder.decode (a SpanRecord) and
    export.otlp.records (OTLP Span bytes straight from the record).

    Source lines, over ``rec`` (the record) and ``f`` (its fields, ``unpack(rec, 0)``): ``uncommon``
    is true for a record the careful path must read; ``text_lines`` finds a whole, short text."""

    def __init__(self, decoder: "SpanDecoder", string_max: int):
        d = decoder
        self.unpack = d._record.unpack_from
        self.string_max = string_max
        self.sflags_at, eflags_at, status_at, _, _, self.trace_hi_at, self.trace_lo_at, self.span_id_at, \
            self.parent_id_at = d._at
        #: end_ns, start_ns, start_tid: the fixed fields' positions (SPAN_FIXED)
        self.end_ns_at, self.start_ns_at, self.start_tid_at = 0, 2, 3
        start, end = d._start_attrs.items, d._end_attrs.items
        items = start + end
        fields = list(d.span.shape.start_fields[len(_START):]) + list(d.span.shape.end_fields[len(_END):])
        self.attrs = [CommonAttr(name, f, at, _value_expression(f, at), dec)
                      for (at, _, _, name, dec), f in zip(items, fields)]
        self.uncommon = ("f[4] & %d or f[1] & %d or (f[%d] & 0xFFFFFFFF) >> %d & %d or f[%d] >> %d & %d "
                         "or f[%d] & 255") % (
            sum(1 << index for _, index, _, _, _ in start), sum(1 << index for _, index, _, _, _ in end),
            self.sflags_at, FLAG_CONVERSION_FAILED, (1 << len(start)) - 1,
            eflags_at, FLAG_CONVERSION_FAILED, (1 << len(end)) - 1, status_at)

    def text_lines(self, a: CommonAttr, use: str, otherwise: List[str]) -> List[str]:
        """Lines that run ``use`` (a line; ``{}``: the text's bytes as captured) when the text is whole
        and short (what value_decoder's text() reads first); else the lines ``otherwise``."""
        f = a.field
        return ["n = rec.find(b'\\0', %d, %d)" % (f.slot, f.slot + f.slot_size),
                "if 0 <= n - %d <= %d:" % (f.slot, self.string_max),
                "    " + use.format("rec[%d:n]" % f.slot),
                "else:"] + ["    " + line for line in otherwise]


def _fast_path(decoder: SpanDecoder, common: CommonRecord):
    """SpanDecoder.decode for this span type: Python written for its shape, for the common record
    (every value delivered, status ok); any other goes to ``decode_careful``.

    Values come out exactly as decode.values' decoders make them (the careful path uses those):
    integers and bools inline, text whole and short inline, the rest through the same decoders.
    Only numbers are written into the source; names and decoders are passed as values."""
    c = common
    lines = [
        "def decode(rec, pid, tid):",
        "    f = unpack(rec, 0)",
        "    if %s:" % c.uncommon,
        "        return careful(rec, pid, tid)",
        "    notes = None",
    ]
    values = []
    for k, a in enumerate(c.attrs):
        if a.expression is not None:
            values.append(a.expression)
            continue
        values.append("v%d" % k)
        slow = ["v%d, cut = D[%d](rec, f[%d])" % (k, k, a.at), "if cut:", "    notes = truncated(notes, N[%d])" % k]
        if a.field.type == "str":
            lines += ["    " + line for line in c.text_lines(a, "v%d = {}.decode('utf-8', 'replace')" % k, slow)]
        else:
            lines += ["    " + line for line in slow]
    attrs = "{%s}" % ", ".join("N[%d]: %s" % (k, v) for k, v in enumerate(values))
    lines.append("    return SpanRecord(span, pid, tid, f[3], f[2], f[0], (f[%d] << 64) | f[%d], f[%d], f[%d], "
                 "f[%d] & %d, 0, '', '', %s, notes)" % (c.trace_hi_at, c.trace_lo_at, c.span_id_at, c.parent_id_at,
                                                        c.sflags_at, TRACE_FLAGS_MASK, attrs))
    namespace = {"unpack": c.unpack, "careful": decoder.decode_careful, "span": decoder.span,
                 "N": tuple(a.name for a in c.attrs), "D": tuple(a.decoder for a in c.attrs),
                 "SpanRecord": SpanRecord, "truncated": _truncated}
    exec("\n".join(lines), namespace)
    return namespace["decode"]


def _truncated(notes: Optional[ValueNotes], name: str) -> ValueNotes:
    notes = notes or ValueNotes([], [], [])
    notes.truncated.append(name)
    return notes


class PointDecoder:
    """Decodes records of one event or plain probe."""

    def __init__(self, point: PointType, string_max: int):
        p = point.shape
        self.point = point
        self._event = point.role == ROLE_EVENT
        self._words = struct.Struct("<%dQ" % len(p.shape))
        self._attrs = AttrDecoder(p.fields, [n for n, _ in point.probe.args], len(_EVENT) if self._event else 0,
                                  string_max)

    def decode(self, rec: bytes, pid: int, tid: int) -> PointRecord:
        ts, fail = POINT_FIXED.unpack_from(rec, HDR_SIZE)
        words = self._words.unpack_from(rec, POINT_WORDS_AT)
        attrs: dict = {}
        if self._event:
            flags = words[_V_FLAGS] & 0xFFFFFFFF
            notes = self._attrs.decode(rec, words, fail, flags >> FLAG_CONVERSION_FAILED, attrs, None)
            return PointRecord(self.point, pid, tid, ts, words[_V_SPAN], (words[_V_TRACE_HI] << 64) | words[_V_TRACE_LO],
                               flags & TRACE_FLAGS_MASK, attrs, notes)
        notes = self._attrs.decode(rec, words, fail, 0, attrs, None)
        return PointRecord(self.point, pid, tid, ts, 0, 0, 0, attrs, notes)


class OtelSpanDecoder:
    """Decodes records of an otel_span probe: the payload bytes, and whether they arrived whole."""

    def __init__(self, point: PointType, string_max: int):
        self.point = point
        (self._field,) = point.shape.fields
        self._payload = value_decoder(self._field, string_max)

    def decode(self, rec: bytes, pid: int, tid: int) -> OtelSpanRecord:
        ts, fail = POINT_FIXED.unpack_from(rec, HDR_SIZE)
        word = struct.unpack_from("<Q", rec, self._field.word)[0]
        if fail:
            return OtelSpanRecord(self.point, pid, tid, ts, b"", False)
        payload, cut = self._payload(rec, word)
        return OtelSpanRecord(self.point, pid, tid, ts, payload, not cut)


Decoder = Union[SpanDecoder, PointDecoder, OtelSpanDecoder]


def plan_decoders(plan: ProviderPlan) -> Dict[Union[SpanType, PointType], Decoder]:
    """A decoder for each span type and point type of ``plan``."""
    sm = plan.config.string_max
    out: Dict[Union[SpanType, PointType], Decoder] = {s: SpanDecoder(s, sm) for s in plan.spans}
    out.update({p: (OtelSpanDecoder if p.role == ROLE_OTEL_SPAN else PointDecoder)(p, sm) for p in plan.points})
    return out


class DecoderCache:
    """plan_decoders(plan), made once per plan and kept as long as the plan lives."""

    def __init__(self):
        self._by_plan: "weakref.WeakKeyDictionary[ProviderPlan, dict]" = weakref.WeakKeyDictionary()

    def for_plan(self, plan: ProviderPlan) -> Dict[Union[SpanType, PointType], Decoder]:
        decoders = self._by_plan.get(plan)
        if decoders is None:
            decoders = self._by_plan[plan] = plan_decoders(plan)
        return decoders
