"""Span and point decoders: one per span type or point type of a plan, at its shape's offsets.

A SpanDecoder reads a span record (kernel.layout's offsets: the fixed part,
the start struct copied whole, the end words) into a SpanRecord: ids and
times from the protocol's fixed arguments, attributes after them, named as
the schema names them. A PointDecoder does the same for event and plain
probe records. Which fixed argument is where comes from
spanprobe.abi.protocol.FIXED_ARGS.

Decoders depend only on the plan, so DecoderCache builds them once per plan,
however many processes it is attached in.
"""

from __future__ import annotations

import struct
import weakref
from typing import Dict, Union

from spanprobe.abi.protocol import (FIXED_ARGS, FLAG_CONVERSION_FAILED, ROLE_EVENT, ROLE_OTEL_SPAN, ROLE_SPAN_END,
                                    ROLE_SPAN_START, TRACE_FLAGS_MASK)

from ..kernel import PointType, ProviderPlan, SpanType
from ..kernel.layout import HDR_SIZE, POINT_FIXED, POINT_WORDS_AT, SPAN_FIXED, SPAN_START_AT
from .records import OtelSpanRecord, PointRecord, SpanRecord
from .values import AttrDecoder, value_decoder


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
        self._start_words = struct.Struct("<%dQ" % len(s.start))
        self._end_words = struct.Struct("<%dQ" % len(s.end))
        self._end_words_at = s.end_words_at
        self._start_attrs = AttrDecoder(s.start_fields, [n for n, _ in span.start.args], len(_START), string_max)
        self._end_attrs = AttrDecoder(s.end_fields, [n for n, _ in span.end.args], len(_END), string_max)
        self._err_type = value_decoder(s.end_fields[_E_TYPE], string_max)
        self._err_msg = value_decoder(s.end_fields[_E_MESSAGE], string_max)

    def decode(self, rec: bytes, pid: int, tid: int) -> SpanRecord:
        end_ns, end_fail, start_ns, start_tid, start_fail = SPAN_FIXED.unpack_from(rec, HDR_SIZE)
        sw = self._start_words.unpack_from(rec, SPAN_START_AT + 16)
        ew = self._end_words.unpack_from(rec, self._end_words_at)
        sflags, eflags = sw[_S_FLAGS] & 0xFFFFFFFF, ew[_E_FLAGS] & 0xFFFFFFFF
        attrs: dict = {}
        notes = None
        if self._start_attrs.items:
            notes = self._start_attrs.decode(rec, sw, start_fail, sflags >> FLAG_CONVERSION_FAILED, attrs, None)
        if self._end_attrs.items:
            notes = self._end_attrs.decode(rec, ew, end_fail, eflags >> FLAG_CONVERSION_FAILED, attrs, notes)
        status = ew[_E_STATUS] & 0xFF
        if status:
            error_type = self._err_type(rec, ew[_E_TYPE])[0] if not end_fail >> _E_TYPE & 1 else ""
            error_message = self._err_msg(rec, ew[_E_MESSAGE])[0] if not end_fail >> _E_MESSAGE & 1 else ""
        else:
            error_type = error_message = ""
        return SpanRecord(self.span, pid, tid, start_tid, start_ns, end_ns, (sw[_S_TRACE_HI] << 64) | sw[_S_TRACE_LO],
                          sw[_S_SPAN], sw[_S_PARENT], sflags & TRACE_FLAGS_MASK, status, error_type, error_message,
                          attrs, notes)


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
