"""Record layouts: where each probe argument lands in a ring-buffer record, by argument shape.

What the kernel side does with a probe depends only on its argument *shape*:
the types (from the schema) and locations (from the SDT notes) of its
arguments. Names (of spans, attributes, providers) only matter in userspace.
So code and records are laid out per shape:

* a *span shape* (start probe shape + end probe shape) gets a start handler,
  an end handler and an open-span map; or, for spans traced by their one-hit
  span probe (the shape then also has that probe's argument location), one
  handler that reads the span's payload (spanprobe.abi.protocol.payload_format)
  and emits the same record; every span type of that shape, in any provider,
  shares them;
* a *point shape* (event or plain probe) gets one handler.

A ModuleLayout is a set of distinct shapes: what one compiled module holds.
Record structs are laid out here, in Python; kernel.render writes them into
the C source with _Static_asserts of every offset, and decode reads records
at the same offsets, so decoder and kernel cannot silently disagree.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from spanprobe.abi.protocol import MAX_BYTES, ROLE_OTEL_SPAN

from ..discover import ProbeInfo
from ..discover.argspec import ArgLocation
from .metrics import DEFAULT_BOUNDS_MS, HttpFields, bounds_ns
from .sampling import Sampler

#: sp_hdr.kind of each record (bpf/common.h SP_KIND_*).
KIND_SPAN, KIND_POINT, KIND_LOAD, KIND_NAME = 1, 2, 3, 4
#: The longest string or bytes capture a module can be built with.
MAX_STRING = 4096
#: Bytes captured of a bytes argument of these roles, whatever the capture config says: an
#: otel_span payload is only useful whole, and the SDK never sends more than MAX_BYTES.
ROLE_CAPTURE = {ROLE_OTEL_SPAN: MAX_BYTES}
#: struct sp_hdr: kind, shape, program, pid, tid, cookie. Every record starts with it.
HDR = struct.Struct("<HHIIIQ")
HDR_SIZE = HDR.size
#: After the header, a span record: end time, end read failures, pad, then the start struct's
#: start time, thread and read failures (the start struct itself begins at SPAN_START_AT).
SPAN_FIXED = struct.Struct("<QI4xQII")
SPAN_START_AT = 40
#: After the header, a point record: its time and read failures, then its argument words.
POINT_FIXED = struct.Struct("<QI")
POINT_WORDS_AT = 40
#: After the header, a name record (kernel.metrics): the hash of a string, then the string's slot.
NAME_HASH = struct.Struct("<Q")
NAME_TEXT_AT = 32


@dataclass(frozen=True)
class CaptureConfig:
    """Capture settings compiled into every module."""

    #: Bytes of each str/bytes argument captured; longer values are cut and marked.
    string_max: int = 256
    #: Spans shorter than this never leave the kernel (0: keep all).
    min_duration_ns: int = 0
    #: Open (started, not ended) spans remembered per span shape; beyond, starts are dropped and counted.
    max_open_spans: int = 65536
    #: Size of the shared ring buffer (a power of two, at least one page); its rescue ring is a quarter of it.
    ringbuf_bytes: int = 16 << 20
    #: Trace spans that have a one-hit span probe by it (kernel.plan.one_hit_allowed)?
    one_hit: bool = True
    #: Which spans leave the kernel (kernel.sampling).
    sampler: Sampler = Sampler()
    #: Count every span in the span metrics map (kernel.metrics)?
    metrics: bool = False
    #: The duration histogram's bucket bounds, nanoseconds.
    histogram_bounds_ns: Tuple[int, ...] = bounds_ns(DEFAULT_BOUNDS_MS)

    @property
    def rescue_bytes(self) -> int:
        """Size of the rescue ring buffer, tried when a reserve in the shared one fails (bpf/common.h)."""
        return max(4096, self.ringbuf_bytes // 4)

    def check(self) -> None:
        if not 1 <= self.string_max <= MAX_STRING:
            raise ValueError("string capture length must be 1..%d bytes, got %d" % (MAX_STRING, self.string_max))
        if self.min_duration_ns < 0:
            raise ValueError("the duration threshold cannot be negative")
        if self.max_open_spans < 1:
            raise ValueError("max open spans must be at least 1")
        rb = self.ringbuf_bytes
        if rb < 4096 or rb & (rb - 1):
            raise ValueError("ring buffer size must be a power of two of at least 4096 bytes, got %d" % rb)


def _align8(n: int) -> int:
    return (n + 7) & ~7


#: One argument's shape: its type and where the probe site puts it.
ArgShape = Tuple[str, ArgLocation]


def probe_shape(probe: ProbeInfo) -> Tuple[ArgShape, ...]:
    return tuple(zip((t for _, t in probe.args), probe.specs))


@dataclass
class ArgField:
    """One argument's place in a record: its word, and its slot if it is a str or bytes."""

    index: int
    type: str
    loc: ArgLocation
    word: int               # byte offset of the 64-bit word in the record
    slot: int = 0           # byte offset of the str/bytes slot
    slot_size: int = 0


def _place(shape: Sequence[ArgShape], words_at: int, string_max: int,
           bytes_max: int = 0) -> Tuple[List[ArgField], int]:
    """Lay out arguments: all words first, then the slots (bytes ones of ``bytes_max``, else
    ``string_max``, bytes). Returns (fields, end offset)."""
    fields = []
    pos = words_at + 8 * len(shape)
    for i, (typ, loc) in enumerate(shape):
        f = ArgField(i, typ, loc, words_at + 8 * i)
        if typ in ("str", "bytes"):
            f.slot = pos
            f.slot_size = string_max + 2 if typ == "str" else bytes_max or string_max
            pos += f.slot_size
        fields.append(f)
    return fields, pos


class SpanShape:
    """Record layout and handlers for spans whose start and end probes have these shapes."""

    def __init__(self, index: int, start: Tuple[ArgShape, ...], end: Tuple[ArgShape, ...], string_max: int,
                 http: Optional[HttpFields] = None, one: Optional[ArgLocation] = None):
        self.index = index
        self.start = start
        self.end = end
        #: Where the one-hit span probe's payload pointer is, for spans traced by that probe; else None.
        self.one = one
        #: Where an HTTP server span's method, route and status code are (kernel.metrics), or None.
        self.http = http
        self.start_fields, end_at = _place(start, SPAN_START_AT + 16, string_max)
        self.start_size = _align8(end_at - SPAN_START_AT)
        self.end_words_at = SPAN_START_AT + self.start_size
        self.end_fields, end_at = _place(end, self.end_words_at, string_max)
        self.record_size = _align8(end_at)
        self.start_fn = "sp_span%d_start" % index
        self.end_fn = "sp_span%d_end" % index
        self.one_fn = "sp_span%d_one" % index

    @property
    def functions(self) -> List[str]:
        """The handlers this shape compiles: the one-hit one, or the start and end pair."""
        return [self.one_fn] if self.one is not None else [self.start_fn, self.end_fn]


class PointShape:
    """Record layout and handler for event or plain probes of this shape."""

    def __init__(self, index: int, role: str, shape: Tuple[ArgShape, ...], string_max: int):
        self.index = index
        self.role = role
        self.shape = shape
        self.fields, end_at = _place(shape, POINT_WORDS_AT, string_max, ROLE_CAPTURE.get(role, 0))
        self.record_size = _align8(end_at)
        self.fn = "sp_point%d" % index


class ModuleLayout:
    """A set of span and point shapes: what one compiled module contains.

    ``key`` names it: two providers (or two processes) whose plans have the
    same layout share one compiled module.
    """

    def __init__(self, machine: int, config: CaptureConfig, span_shapes, point_shapes):
        self.machine = machine
        self.config = config
        sm = config.string_max
        self.spans = [SpanShape(i, s, e, sm, http, one) for i, (s, e, http, one) in enumerate(span_shapes)]
        self.points = [PointShape(i, role, shape, sm) for i, (role, shape) in enumerate(point_shapes)]
        self.key = hashlib.sha256(repr((machine, config, list(span_shapes), list(point_shapes))).encode()).hexdigest()

    @property
    def functions(self) -> List[str]:
        return [f for s in self.spans for f in s.functions] + [p.fn for p in self.points]
