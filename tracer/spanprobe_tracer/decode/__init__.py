"""Decode: ring-buffer records -> span, event and probe records, still in kernel terms.

    records   SpanRecord, PointRecord, LoadRecord, NameRecord, ValueNotes: one object per record
    values    an argument's value from its word and slot (masked, sign-extended, text cut whole)
    decoders  SpanDecoder (a decode written per span shape for the common record, which its
              CommonRecord describes), PointDecoder, OtelSpanDecoder for each type of a plan; DecoderCache
    bindings  Bindings: cookie -> decoder and process; ``decode(record bytes)``; span_path

Records are read at the offsets kernel.layout computes (the same ones the C's
_Static_asserts pin down); the assemble stage turns them into OpenTelemetry spans.
"""

from .bindings import Bindings
from .decoders import DecoderCache, OtelSpanDecoder, PointDecoder, SpanDecoder, plan_decoders
from .records import LoadRecord, NameRecord, OtelSpanRecord, PointRecord, SpanRecord, ValueNotes

__all__ = ["Bindings", "DecoderCache", "OtelSpanDecoder", "PointDecoder", "SpanDecoder", "plan_decoders",
           "LoadRecord", "NameRecord", "OtelSpanRecord", "PointRecord", "SpanRecord", "ValueNotes"]
