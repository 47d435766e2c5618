"""BPF programs rendered from provider schemas, and the records they emit.

What the kernel side does with a probe depends only on its argument *shape*:
the types (from the schema) and locations (from the SDT notes) of its
arguments. Names (of spans, attributes, providers) only matter in userspace.
So code is rendered per shape:

* a *span shape* (start probe shape + end probe shape) gets a start handler,
  an end handler and an open-span map; every span type of that shape, in any
  provider, shares them;
* a *point shape* (event or plain probe) gets one handler.

A provider's *plan* says which shape each of its spans and probes has. Its
module is the set of distinct shapes, compiled once and reused by every
provider and process with the same shape set: forty workers of one
application, or the same application restarted, attach without compiling, and
a provider with twenty spans of three shapes compiles three handler pairs.

Each attachment gets a BPF cookie (uprobe.attach); handlers copy it into the
record header, and the tracer maps it back to the span type or probe, its
provider and its process (a Binding). Record structs are laid out here, in
Python, and rendered into the C source with _Static_asserts of every offset,
so decoder and kernel cannot silently disagree. The core module
(bpf/core.c) owns the ring buffer and counters all modules write to.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import struct
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from spanprobe.abi.protocol import BYTES_TRUNCATED, FIXED_ARGS, FLAG_CONVERSION_FAILED, TRACE_FLAGS_MASK
from spanprobe.abi.types import ArgType

from . import argspec
from .discovery import ProbeInfo, ProviderImage
from .records import LoadRecord, PointRecord, SpanRecord, ValueNotes  # noqa: F401 (re-exported)

log = logging.getLogger("spanprobe.tracer")


class Counter(enum.IntEnum):
    """Slots of the per-CPU counter array (bpf/common.h SP_CNT_*)."""

    STARTS = 0
    START_MAP_FULL = 1
    END_WITHOUT_START = 2
    FILTERED = 3
    SPAN_RB_FULL = 4
    SPANS = 5
    POINT_RB_FULL = 6
    POINTS = 7
    LOADS = 8
    LOAD_RB_FULL = 9


NCOUNTERS = 16
KIND_SPAN, KIND_POINT, KIND_LOAD = 1, 2, 3
MAX_STRING = 4096
INT64_MAX = (1 << 63) - 1
HDR = struct.Struct("<HHIIIQ")   # kind, shape, program, pid, tid, cookie
HDR_SIZE = HDR.size
SPAN_START_AT = 40               # the start struct's offset in a span record
POINT_WORDS_AT = 40              # argument words' offset in a point record


class ProgramError(RuntimeError):
    """A BPF module could not be built or loaded."""


@dataclass(frozen=True)
class ProgramConfig:
    """Capture settings compiled into every module."""

    #: Bytes of each str/bytes argument captured; longer values are cut and marked.
    string_max: int = 256
    #: Spans shorter than this never leave the kernel (0: keep all).
    min_duration_ns: int = 0
    #: Open (started, not ended) spans remembered per span shape; beyond, starts are dropped and counted.
    max_open_spans: int = 65536
    #: Size of the shared ring buffer (a power of two, at least one page).
    ringbuf_bytes: int = 16 << 20

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


# The fixed leading arguments of the span protocol (docs/abi.md), checked by type.
SPAN_START_FIXED, SPAN_END_FIXED, EVENT_FIXED = (tuple(t for _, t in FIXED_ARGS[role])
                                                 for role in ("span_start", "span_end", "event"))
INT_TYPES = {t.value: (t.size, t.signed) for t in ArgType if t.is_integer}


def _align8(n: int) -> int:
    return (n + 7) & ~7


# --- shapes -------------------------------------------------------------------------

#: One argument's shape: its type and where the probe site puts it.
ArgShape = Tuple[str, argspec.ArgLocation]


def probe_shape(probe: ProbeInfo) -> Tuple[ArgShape, ...]:
    return tuple(zip((t for _, t in probe.args), probe.specs))


@dataclass
class ArgField:
    """One argument's place in a record: its word, and its slot if it is a str or bytes."""

    index: int
    type: str
    loc: argspec.ArgLocation
    word: int               # byte offset of the 64-bit word in the record
    slot: int = 0           # byte offset of the str/bytes slot
    slot_size: int = 0


def _place(shape: Sequence[ArgShape], words_at: int, string_max: int) -> Tuple[List[ArgField], int]:
    """Lay out arguments: all words first, then the slots. Returns (fields, end offset)."""
    fields = []
    pos = words_at + 8 * len(shape)
    for i, (typ, loc) in enumerate(shape):
        f = ArgField(i, typ, loc, words_at + 8 * i)
        if typ in ("str", "bytes"):
            f.slot = pos
            f.slot_size = string_max + 2 if typ == "str" else string_max
            pos += f.slot_size
        fields.append(f)
    return fields, pos


class SpanShape:
    """Record layout and handlers for spans whose start and end probes have these shapes."""

    def __init__(self, index: int, start: Tuple[ArgShape, ...], end: Tuple[ArgShape, ...], string_max: int):
        self.index = index
        self.start = start
        self.end = end
        self.start_fields, end_at = _place(start, SPAN_START_AT + 16, string_max)
        self.start_size = _align8(end_at - SPAN_START_AT)
        self.end_words_at = SPAN_START_AT + self.start_size
        self.end_fields, end_at = _place(end, self.end_words_at, string_max)
        self.record_size = _align8(end_at)
        self.start_fn = "sp_span%d_start" % index
        self.end_fn = "sp_span%d_end" % index


class PointShape:
    """Record layout and handler for event or plain probes of this shape."""

    def __init__(self, index: int, role: str, shape: Tuple[ArgShape, ...], string_max: int):
        self.index = index
        self.role = role
        self.shape = shape
        self.fields, end_at = _place(shape, POINT_WORDS_AT, string_max)
        self.record_size = _align8(end_at)
        self.fn = "sp_point%d" % index


@dataclass
class SpanDef:
    """A span type of one provider: what the schema says about it, and its shape."""

    name: str
    kind: str
    provider: str
    code: Optional[dict]
    start: ProbeInfo
    end: ProbeInfo
    shape: Optional[SpanShape] = None

    @property
    def code_attributes(self) -> Dict[str, object]:
        """The schema's "code" as semantic-convention attributes (code.function.name, ...)."""
        cached = self.__dict__.get("_code_attributes")
        if cached is None:
            cached = self.__dict__["_code_attributes"] = code_attributes(self.code)
        return cached


def code_attributes(code) -> Dict[str, object]:
    """Schema "code" -> current semantic-convention code.* attributes."""
    if not isinstance(code, dict):
        return {}
    out: Dict[str, object] = {}
    if isinstance(code.get("function"), str):
        out["code.function.name"] = code["function"]
    if isinstance(code.get("filepath"), str):
        out["code.file.path"] = code["filepath"]
    if isinstance(code.get("lineno"), int) and not isinstance(code.get("lineno"), bool):
        out["code.line.number"] = code["lineno"]
    return out


@dataclass
class PointDef:
    """An event probe (role "event") or a plain probe (role "plain") of one provider."""

    name: str            # event name, or "<provider>.<probe>" for plain probes
    role: str
    provider: str
    probe: ProbeInfo
    shape: Optional[PointShape] = None


class ModuleLayout:
    """A set of span and point shapes: what one compiled module contains."""

    def __init__(self, machine: int, config: ProgramConfig, span_shapes, point_shapes):
        self.machine = machine
        self.config = config
        sm = config.string_max
        self.spans = [SpanShape(i, s, e, sm) for i, (s, e) in enumerate(span_shapes)]
        self.points = [PointShape(i, role, shape, sm) for i, (role, shape) in enumerate(point_shapes)]
        self.key = hashlib.sha256(repr((machine, config, list(span_shapes), list(point_shapes))).encode()).hexdigest()

    @property
    def functions(self) -> List[str]:
        return [f for s in self.spans for f in (s.start_fn, s.end_fn)] + [p.fn for p in self.points]

    # --- C ---------------------------------------------------------------------------

    def render(self, program_id: int) -> str:
        template = _bpf_source("spans.c")
        defines = ("#define SP_RINGBUF_BYTES %d\n#define SP_PROGRAM %d\n#define SP_STR_MAX %d\n"
                   "#define SP_MIN_NS %dULL\n#define SP_MAX_OPEN %d\n"
                   % (self.config.ringbuf_bytes, program_id, self.config.string_max,
                      self.config.min_duration_ns, self.config.max_open_spans))
        decls, handlers = [], []
        for s in self.spans:
            decls.append(self._span_decls(s))
            handlers.append(self._start_handler(s))
            handlers.append(self._end_handler(s))
        for p in self.points:
            decls.append(self._point_decls(p))
            handlers.append(self._point_handler(p))
        return (template.replace("/*@COMMON@*/", defines + _bpf_source("common.h"))
                .replace("/*@DECLARATIONS@*/", "\n".join(decls))
                .replace("/*@HANDLERS@*/", "\n".join(handlers)))

    @staticmethod
    def _shape_comment(shape: Sequence[ArgShape]) -> str:
        return ", ".join(t for t, _ in shape)

    @staticmethod
    def _slot_decls(fields: Sequence[ArgField]) -> List[str]:
        return ["    char s%d[%d];" % (f.index, f.slot_size) for f in fields if f.slot_size]

    @staticmethod
    def _asserts(struct_name: str, size: int, members: Sequence[Tuple[str, int]]) -> List[str]:
        out = ["_Static_assert(sizeof(struct %s) == %d, \"%s size\");" % (struct_name, size, struct_name)]
        out += ["_Static_assert(__builtin_offsetof(struct %s, %s) == %d, \"%s.%s\");"
                % (struct_name, m, off, struct_name, m) for m, off in members]
        return out

    def _span_decls(self, s: SpanShape) -> str:
        i = s.index
        lines = ["/* span shape %d: start (%s), end (%s) */" % (i, self._shape_comment(s.start),
                                                              self._shape_comment(s.end)),
                 "struct sp_start_%d {" % i, "    u64 start_ns;", "    u32 tid;", "    u32 fail;",
                 "    u64 w[%d];" % len(s.start)]
        lines += self._slot_decls(s.start_fields)
        lines += ["};", "struct sp_span_%d {" % i, "    struct sp_hdr h;", "    u64 end_ns;",
                  "    u32 end_fail;", "    u32 pad;", "    struct sp_start_%d st;" % i,
                  "    u64 ew[%d];" % len(s.end)]
        lines += self._slot_decls(s.end_fields)
        lines += ["};"]
        lines += self._asserts("sp_start_%d" % i, s.start_size,
                               [("s%d" % f.index, f.slot - SPAN_START_AT) for f in s.start_fields if f.slot_size])
        lines += self._asserts("sp_span_%d" % i, s.record_size,
                               [("h", 0), ("end_ns", HDR_SIZE), ("st", SPAN_START_AT), ("ew", s.end_words_at)]
                               + [("s%d" % f.index, f.slot) for f in s.end_fields if f.slot_size])
        lines += ["BPF_F_TABLE(\"hash\", struct sp_key, struct sp_start_%d, sp_starts_%d, SP_MAX_OPEN, "
                  "BPF_F_NO_PREALLOC);" % (i, i),
                  "BPF_ARRAY(sp_zero_%d, struct sp_start_%d, 1);" % (i, i), ""]
        return "\n".join(lines)

    def _point_decls(self, p: PointShape) -> str:
        i = p.index
        lines = ["/* %s shape %d: (%s) */" % (p.role, i, self._shape_comment(p.shape)),
                 "struct sp_point_%d {" % i, "    struct sp_hdr h;", "    u64 ts;", "    u32 fail;",
                 "    u32 pad;"]
        if p.shape:
            lines.append("    u64 w[%d];" % len(p.shape))
        lines += self._slot_decls(p.fields)
        lines += ["};"]
        lines += self._asserts("sp_point_%d" % i, p.record_size,
                               [("ts", HDR_SIZE)] + [("s%d" % f.index, f.slot) for f in p.fields if f.slot_size])
        return "\n".join(lines) + "\n"

    def _read_args(self, fields: Sequence[ArgField], base: str, words: str, skip_first: bool = False) -> List[str]:
        """Statements reading each argument into ``base``->``words``[i] and its slot."""
        out = []
        for f in fields:
            if skip_first and f.index == 0:
                continue
            bit = "fail |= (1u << %d);" % f.index
            word = "%s->%s[%d]" % (base, words, f.index)
            if f.type == "str":
                slot = "%s->s%d" % (base, f.index)
                out.append("    { u64 _p = 0; %s %s = _p;" % (argspec.render_read(f.loc, self.machine, "_p", bit), word))
                # NULL is "no value" (docs/abi.md): an empty string, without a read that would fault.
                out.append("      if (!_p) %s[0] = 0;" % slot)
                out.append("      else if (bpf_probe_read_user_str(%s, sizeof(%s), (void *)_p) < 0) { %s[0] = 0; %s } }"
                           % (slot, slot, slot, bit))
            elif f.type == "bytes":
                slot = "%s->s%d" % (base, f.index)
                out.append("    { u64 _p = 0; u32 _h = 0; %s" % argspec.render_read(f.loc, self.machine, "_p", bit))
                out.append("      if (bpf_probe_read_user(&_h, 4, (void *)_p) != 0) { %s } else {" % bit)
                out.append("        u32 _n = _h & %#x; if (_n > SP_STR_MAX) _n = SP_STR_MAX;" % (BYTES_TRUNCATED - 1))
                out.append("        if (bpf_probe_read_user(%s, _n, (void *)(_p + 4)) != 0) { %s } }" % (slot, bit))
                out.append("      %s = _h; }" % word)
            else:
                out.append("    " + argspec.render_read(f.loc, self.machine, word, bit))
        return out

    @staticmethod
    def _handler_head(fn: str, locals_: str) -> List[str]:
        """Every handler's opening: the time and the thread first, before anything can fail."""
        return ["int %s(struct pt_regs *ctx)" % fn, "{",
                "    u64 now = bpf_ktime_get_boot_ns();",
                "    u64 pid_tgid = bpf_get_current_pid_tgid();",
                "    u32 %s;" % locals_]

    def _span_key(self, span_id: ArgField) -> List[str]:
        """The key a span's start and end probes meet on: its process and the span id argument."""
        return ["    u64 span_id = 0;",
                "    " + argspec.render_read(span_id.loc, self.machine, "span_id", "return 0;"),
                "    struct sp_key k = {};",
                "    k.tgid = pid_tgid >> 32;",
                "    k.span_id = span_id;"]

    @staticmethod
    def _record_header(kind: str, shape: int, pid: str) -> List[str]:
        """The sp_hdr of a reserved ring-buffer record ``r``: what userspace decodes it by."""
        return ["    r->h.kind = %s;" % kind, "    r->h.shape = %d;" % shape,
                "    r->h.program = SP_PROGRAM;", "    r->h.pid = %s;" % pid, "    r->h.tid = (u32)pid_tgid;",
                "    r->h.cookie = sp_attach_cookie(ctx);"]

    @staticmethod
    def _submit(fail: str, counter: str) -> List[str]:
        """Close a handler: record ``r``'s read failures, hand it over (no wakeup: drained on a timer)."""
        return ["    r->%s = fail;" % fail, "    sp_events.ringbuf_submit(r, BPF_RB_NO_WAKEUP);",
                "    sp_count(%s);" % counter, "    return 0;", "}", ""]

    def _start_handler(self, s: SpanShape) -> str:
        i = s.index
        lines = self._handler_head(s.start_fn, "fail = 0, zero = 0") + self._span_key(s.start_fields[0])
        lines += ["    struct sp_start_%d *init = sp_zero_%d.lookup(&zero);" % (i, i),
                  "    if (!init)", "        return 0;",
                  # update() then lookup(): two hash-map operations where bcc's lookup_or_try_init()
                  # makes three (a lookup that misses first); each costs ~0.2 us in the probe here.
                  "    if (sp_starts_%d.update(&k, init) != 0) {" % i,
                  "        sp_count(SP_CNT_START_MAP_FULL);", "        return 0;", "    }",
                  "    struct sp_start_%d *v = sp_starts_%d.lookup(&k);" % (i, i),
                  "    if (!v)", "        return 0;",
                  "    v->start_ns = now;", "    v->tid = (u32)pid_tgid;", "    v->w[0] = span_id;"]
        lines += self._read_args(s.start_fields, "v", "w", skip_first=True)
        lines += ["    v->fail = fail;", "    sp_count(SP_CNT_STARTS);", "    return 0;", "}", ""]
        return "\n".join(lines)

    def _end_handler(self, s: SpanShape) -> str:
        i = s.index
        lines = self._handler_head(s.end_fn, "fail = 0") + self._span_key(s.end_fields[0])
        lines += ["    struct sp_start_%d *st = sp_starts_%d.lookup(&k);" % (i, i),
                  "    if (!st) {", "        sp_count(SP_CNT_END_WITHOUT_START);", "        return 0;", "    }",
                  "    if (SP_MIN_NS && now - st->start_ns < SP_MIN_NS) {",
                  "        sp_starts_%d.delete(&k);" % i,
                  "        sp_count(SP_CNT_FILTERED);", "        return 0;", "    }",
                  "    struct sp_span_%d *r = sp_events.ringbuf_reserve(sizeof(struct sp_span_%d));" % (i, i),
                  "    if (!r) {", "        sp_starts_%d.delete(&k);" % i,
                  "        sp_count(SP_CNT_SPAN_RB_FULL);", "        return 0;", "    }"]
        lines += self._record_header("SP_KIND_SPAN", i, "k.tgid")
        lines += ["    r->end_ns = now;", "    r->pad = 0;",
                  "    bpf_probe_read_kernel(&r->st, sizeof(r->st), st);",
                  "    sp_starts_%d.delete(&k);" % i,
                  "    r->ew[0] = span_id;"]
        lines += self._read_args(s.end_fields, "r", "ew", skip_first=True)
        lines += self._submit("end_fail", "SP_CNT_SPANS")
        return "\n".join(lines)

    def _point_handler(self, p: PointShape) -> str:
        i = p.index
        lines = self._handler_head(p.fn, "fail = 0")
        lines += ["    struct sp_point_%d *r = sp_events.ringbuf_reserve(sizeof(struct sp_point_%d));" % (i, i),
                  "    if (!r) {", "        sp_count(SP_CNT_POINT_RB_FULL);", "        return 0;", "    }"]
        lines += self._record_header("SP_KIND_POINT", i, "pid_tgid >> 32")
        lines += ["    r->ts = now;", "    r->pad = 0;"]
        lines += self._read_args(p.fields, "r", "w")
        lines += self._submit("fail", "SP_CNT_POINTS")
        return "\n".join(lines)


class Plan:
    """How one provider is traced: its span and point definitions, and the module layout they need."""

    def __init__(self, image: ProviderImage, config: ProgramConfig, warn: Callable[[str], None] = log.warning):
        self.image = image
        self.config = config
        self.provider = image.provider
        self.spans: List[SpanDef] = []
        self.points: List[PointDef] = []
        self._build_defs(warn)
        span_shapes: List[tuple] = []
        point_shapes: List[tuple] = []
        for s in self.spans:
            key = (probe_shape(s.start), probe_shape(s.end))
            if key not in span_shapes:
                span_shapes.append(key)
        for p in self.points:
            key = (p.role, probe_shape(p.probe))
            if key not in point_shapes:
                point_shapes.append(key)
        self.module = ModuleLayout(image.machine, config, span_shapes, point_shapes)
        for s in self.spans:
            s.shape = self.module.spans[span_shapes.index((probe_shape(s.start), probe_shape(s.end)))]
        for p in self.points:
            p.shape = self.module.points[point_shapes.index((p.role, probe_shape(p.probe)))]

    def _build_defs(self, warn):
        image, probes = self.image, self.image.probes
        used = set()

        def types(p: ProbeInfo):
            return tuple(t for _, t in p.args)

        for entry in image.schema.get("spans", []):
            name = entry.get("name") or entry.get("start")
            start, end = probes.get(entry.get("start")), probes.get(entry.get("end"))
            where = "provider %s span %r" % (self.provider, name)
            if start is None or end is None:
                warn("%s: its start or end probe cannot be traced; span skipped" % where)
                continue
            if start.name in used or end.name in used or start.name == end.name:
                warn("%s: shares a probe with another span; span skipped" % where)
                continue
            if types(start)[:5] != SPAN_START_FIXED or types(end)[:5] != SPAN_END_FIXED:
                warn("%s: its probes do not follow the span protocol (docs/abi.md); span skipped" % where)
                continue
            used.update((start.name, end.name))
            self.spans.append(SpanDef(str(name), entry.get("kind", "internal"), self.provider,
                                      entry.get("code"), start, end))
        event_names = {}
        for entry in image.schema.get("events", []):
            event_names.setdefault(entry.get("probe"), entry.get("name") or entry.get("probe"))
        for probe in probes.values():
            if probe.name in used:
                continue
            if probe.role == "event":
                if types(probe)[:4] != EVENT_FIXED:
                    warn("provider %s event probe %s: arguments do not follow the event protocol; skipped"
                         % (self.provider, probe.name))
                    continue
                name = event_names.get(probe.name, probe.name)
            elif probe.role == "plain":
                name = "%s.%s" % (self.provider, probe.name)
            else:
                continue  # a span_start/span_end probe no span uses: nothing to pair it with
            self.points.append(PointDef(str(name), probe.role, self.provider, probe))

    @property
    def empty(self) -> bool:
        return not (self.spans or self.points)


def _bpf_source(name: str) -> str:
    return resources.files("spanprobe_tracer.bpf").joinpath(name).read_text()


# --- decoding -----------------------------------------------------------------------

_F64 = struct.Struct("<d")
_U64 = struct.Struct("<Q")


def _text(data: bytes, limit: int) -> Tuple[str, bool]:
    """Decode captured UTF-8, cutting at ``limit`` bytes without splitting a character."""
    truncated = len(data) > limit
    if truncated:
        data = data[:limit]
        # Drop a partial multi-byte character the cut left at the end.
        for back in range(1, min(4, len(data)) + 1):
            b = data[-back]
            if b & 0xC0 != 0x80:  # a lead byte (or ASCII)
                need = 1 if b < 0x80 else 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4
                if need > back:
                    data = data[:-back]
                break
    return data.decode("utf-8", "replace"), truncated


def _value_decoder(f: ArgField, string_max: int):
    """A function (record bytes, word) -> (value, truncated).

    Values come out ready to be OpenTelemetry attribute values: a u64 above
    2**63-1, which OTLP's signed integers cannot carry, is its decimal string.
    """
    if f.type in INT_TYPES:
        size, signed = INT_TYPES[f.type]
        bits = 8 * min(size, f.loc.size)
        mask = (1 << bits) - 1
        sign = 1 << (bits - 1)
        if signed:
            return lambda rec, w: (((w & mask) ^ sign) - sign, False)
        if bits == 64:
            return lambda rec, w: (w if w <= INT64_MAX else str(w), False)
        return lambda rec, w: (w & mask, False)
    if f.type == "bool":
        return lambda rec, w: (bool(w & 0xFF), False)
    if f.type == "f64":
        return lambda rec, w: (_F64.unpack(_U64.pack(w))[0], False)
    if f.type == "str":
        start, end = f.slot, f.slot + f.slot_size

        def text(rec, w):
            nul = rec.find(b"\0", start, end)
            if 0 <= nul - start <= string_max:  # the common case: whole and short
                return rec[start:nul].decode("utf-8", "replace"), False
            return _text(rec[start:nul if nul >= 0 else end], string_max)
        return text
    if f.type == "bytes":
        start = f.slot

        def data(rec, w):
            length = w & (BYTES_TRUNCATED - 1)
            sdk_cut = bool(w & BYTES_TRUNCATED)
            n = min(length, string_max)
            return bytes(rec[start:start + n]), sdk_cut or length > string_max
        return data
    raise ProgramError("unknown argument type %r" % f.type)


class _AttrDecoder:
    """Decodes the attribute arguments (after the protocol's fixed ones) of one probe."""

    def __init__(self, fields: Sequence[ArgField], names: Sequence[str], first_attr: int, string_max: int):
        self.items = [(f.index, f.index - first_attr, name, _value_decoder(f, string_max))
                      for f, name in zip(fields[first_attr:], names[first_attr:])]

    def decode(self, rec: bytes, words: Sequence[int], fail: int, conv_flags: int, attrs: dict,
               notes: Optional[ValueNotes]) -> Optional[ValueNotes]:
        for index, attr_index, name, dec in self.items:
            if conv_flags >> attr_index & 1:
                notes = notes or ValueNotes([], [], [])
                notes.conversion_failed.append(name)
                continue
            if fail >> index & 1:
                notes = notes or ValueNotes([], [], [])
                notes.read_failed.append(name)
                continue
            value, cut = dec(rec, words[index])
            attrs[name] = value
            if cut:
                notes = notes or ValueNotes([], [], [])
                notes.truncated.append(name)
        return notes


_SPAN_FIXED = struct.Struct("<QI4xQII")  # end_ns, end_fail, pad, start_ns, start_tid, start_fail
_POINT_FIXED = struct.Struct("<QI")  # ts, fail


class SpanDecoder:
    """Decodes span records of one span type (its shape's offsets, its attribute names)."""

    def __init__(self, span: SpanDef, string_max: int):
        s = span.shape
        self.span = span
        self._start_words = struct.Struct("<%dQ" % len(s.start))
        self._end_words = struct.Struct("<%dQ" % len(s.end))
        self._end_words_at = s.end_words_at
        self._start_attrs = _AttrDecoder(s.start_fields, [n for n, _ in span.start.args], 5, string_max)
        self._end_attrs = _AttrDecoder(s.end_fields, [n for n, _ in span.end.args], 5, string_max)
        self._err_type = _value_decoder(s.end_fields[2], string_max)
        self._err_msg = _value_decoder(s.end_fields[3], string_max)

    def decode(self, rec: bytes, pid: int, tid: int) -> SpanRecord:
        end_ns, end_fail, start_ns, start_tid, start_fail = _SPAN_FIXED.unpack_from(rec, HDR_SIZE)
        sw = self._start_words.unpack_from(rec, SPAN_START_AT + 16)
        ew = self._end_words.unpack_from(rec, self._end_words_at)
        sflags, eflags = sw[4] & 0xFFFFFFFF, ew[4] & 0xFFFFFFFF
        attrs: dict = {}
        notes = None
        if self._start_attrs.items:
            notes = self._start_attrs.decode(rec, sw, start_fail, sflags >> FLAG_CONVERSION_FAILED, attrs, None)
        if self._end_attrs.items:
            notes = self._end_attrs.decode(rec, ew, end_fail, eflags >> FLAG_CONVERSION_FAILED, attrs, notes)
        status = ew[1] & 0xFF
        if status:
            error_type = self._err_type(rec, ew[2])[0] if not end_fail & 4 else ""
            error_message = self._err_msg(rec, ew[3])[0] if not end_fail & 8 else ""
        else:
            error_type = error_message = ""
        return SpanRecord(self.span, pid, tid, start_tid, start_ns, end_ns, (sw[2] << 64) | sw[3], sw[0],
                          sw[1], sflags & TRACE_FLAGS_MASK, status, error_type, error_message, attrs, notes)


class PointDecoder:
    """Decodes records of one event or plain probe."""

    def __init__(self, point: PointDef, string_max: int):
        p = point.shape
        self.point = point
        self._event = point.role == "event"
        self._words = struct.Struct("<%dQ" % len(p.shape))
        self._attrs = _AttrDecoder(p.fields, [n for n, _ in point.probe.args], 4 if self._event else 0,
                                   string_max)

    def decode(self, rec: bytes, pid: int, tid: int) -> PointRecord:
        ts, fail = _POINT_FIXED.unpack_from(rec, HDR_SIZE)
        words = self._words.unpack_from(rec, POINT_WORDS_AT)
        attrs: dict = {}
        if self._event:
            flags = words[3] & 0xFFFFFFFF
            notes = self._attrs.decode(rec, words, fail, flags >> FLAG_CONVERSION_FAILED, attrs, None)
            return PointRecord(self.point, pid, tid, ts, words[0], (words[1] << 64) | words[2], flags & TRACE_FLAGS_MASK,
                               attrs, notes)
        notes = self._attrs.decode(rec, words, fail, 0, attrs, None)
        return PointRecord(self.point, pid, tid, ts, 0, 0, 0, attrs, notes)


def decoders_for(plan: Plan) -> Dict[int, object]:
    """Decoders for a plan, keyed by id() of each of its SpanDefs/PointDefs (which live as long as it).

    Built once per plan and kept on it.
    """
    out = plan.__dict__.get("_decoders")
    if out is None:
        sm = plan.config.string_max
        out = {id(s): SpanDecoder(s, sm) for s in plan.spans}
        out.update({id(p): PointDecoder(p, sm) for p in plan.points})
        plan.__dict__["_decoders"] = out
    return out


# --- compiled modules ---------------------------------------------------------------------

class Module:
    """A compiled, loaded module: its handlers' program fds and open-span maps."""

    def __init__(self, program_id: int, layout: ModuleLayout, bpf):
        self.id = program_id
        self.layout = layout
        self.bpf = bpf
        from bcc import BPF  # noqa: lazy: bcc exists only in Debian's python
        self.prog_fds: Dict[str, int] = {fn: bpf.load_func(fn.encode(), BPF.KPROBE).fd for fn in layout.functions}

    def reap(self, pid: Optional[int], older_than_ns: Optional[int] = None) -> int:
        """Delete open-span entries of ``pid`` (all pids if None) started before ``older_than_ns``.

        Returns how many were removed: starts whose end will never come (the
        process exited, or the span has been open longer than anyone waits).
        """
        removed = 0
        for s in self.layout.spans:
            table = self.bpf.get_table("sp_starts_%d" % s.index)
            doomed = [k for k, v in table.items()
                      if (pid is None or k.tgid == pid) and (older_than_ns is None or v.start_ns < older_than_ns)]
            for k in doomed:
                try:
                    del table[k]
                    removed += 1
                except KeyError:
                    pass  # its end arrived meanwhile
        return removed

    def open_spans(self) -> int:
        return sum(len(self.bpf.get_table("sp_starts_%d" % s.index).items()) for s in self.layout.spans)

    def close(self) -> None:
        self.bpf.cleanup()


@dataclass
class Binding:
    """What a cookie stands for: the decoder of the records it marks, and their process."""

    decoder: object
    pid: int


class Programs:
    """The core module, compiled modules by layout key, and the cookie bindings.

    ``module_for`` may be called from a worker thread: bcc's compile runs in
    C without the GIL, so the tracer keeps draining the ring buffer meanwhile.
    """

    def __init__(self, config: ProgramConfig, warn: Callable[[str], None] = log.warning):
        config.check()
        self.config = config
        self._warn = warn
        self._lock = threading.Lock()
        self._by_key: Dict[str, Module] = {}
        self._next_id = 1
        self._next_cookie = 1
        self.bindings: Dict[int, Binding] = {}
        self.core = self._compile_core()
        self._counters = self.core.get_table("sp_counters")

    def _compile_core(self):
        from bcc import BPF
        src = ("#include <uapi/linux/ptrace.h>\n#define SP_CORE\n#define SP_RINGBUF_BYTES %d\n"
               % self.config.ringbuf_bytes) + _bpf_source("common.h") + _bpf_source("core.c")
        try:
            return BPF(text=src.encode())
        except Exception as exc:
            raise ProgramError("cannot compile the core BPF module (%s); run `spanprobe doctor`" % exc) from exc

    def plan_for(self, image: ProviderImage) -> Plan:
        """The image's plan, made once and kept on the image (it lives as long as the image is cached)."""
        plan = image.derived.get("plan")
        if plan is None or plan.config != self.config:
            plan = image.derived["plan"] = Plan(image, self.config, self._warn)
        return plan

    def cached(self, layout: ModuleLayout) -> Optional[Module]:
        with self._lock:
            return self._by_key.get(layout.key)

    def module_for(self, layout: ModuleLayout) -> Module:
        with self._lock:
            module = self._by_key.get(layout.key)
            if module is not None:
                return module
            program_id = self._next_id
            self._next_id += 1
        from bcc import BPF
        src = layout.render(program_id)
        try:
            bpf = BPF(text=src.encode())
            module = Module(program_id, layout, bpf)
        except Exception as exc:
            raise ProgramError("cannot build a BPF module (%d span shapes, %d probe shapes): %s"
                               % (len(layout.spans), len(layout.points), exc)) from exc
        with self._lock:
            existing = self._by_key.get(layout.key)
            if existing is not None:  # another thread won the race
                module.close()
                return existing
            self._by_key[layout.key] = module
        log.debug("compiled BPF module %d (%d span shapes, %d probe shapes)",
                  program_id, len(layout.spans), len(layout.points))
        return module

    @property
    def modules(self) -> List[Module]:
        with self._lock:
            return list(self._by_key.values())

    def bind(self, decoder, pid: int) -> int:
        """A fresh cookie standing for ``decoder`` in process ``pid``."""
        cookie = self._next_cookie
        self._next_cookie += 1
        self.bindings[cookie] = Binding(decoder, pid)
        return cookie

    def unbind(self, cookies) -> None:
        for c in cookies:
            self.bindings.pop(c, None)

    def decode(self, rec: bytes):
        """A SpanRecord, PointRecord or LoadRecord from one ring-buffer record (None if unknown)."""
        kind, _shape, _program, pid, tid, cookie = HDR.unpack_from(rec, 0)
        if kind == KIND_LOAD:
            return LoadRecord(pid, tid)
        binding = self.bindings.get(cookie)
        if binding is None or binding.pid != pid:
            return None
        return binding.decoder.decode(rec, pid, tid)

    def counters(self) -> Dict[Counter, int]:
        """Kernel-side counters summed over CPUs."""
        out = {}
        for c in Counter:
            values = self._counters[self._counters.Key(int(c))]
            out[c] = sum(values)
        return out

    def close(self) -> None:
        for module in self.modules:
            try:
                module.close()
            except Exception:  # pragma: no cover - best effort at exit
                pass
        try:
            self.core.cleanup()
        except Exception:  # pragma: no cover
            pass
