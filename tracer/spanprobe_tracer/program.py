"""BPF programs rendered from provider schemas, and the records they emit.

A *layout* is everything that decides a provider's BPF code: its schema, the
argument locations in its SDT notes, and the tracer's capture settings. Every
process that loads a provider with the same layout (forty workers of one
application) shares one compiled module, and attaching to one more process
costs a few perf_event_open calls instead of a compile.

The module's record structs are laid out here, in Python, and rendered into
the C source (bpf/spans.c) together with _Static_asserts of every offset, so
the decoder and the kernel side cannot silently disagree.

One core module (bpf/core.c) owns the ring buffer and counters every provider
module writes to; see bpf/common.h.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import struct
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import argspec
from .discovery import ProbeInfo, ProviderImage
from .records import LoadRecord, PointRecord, SpanRecord, ValueNotes

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
_HDR = struct.Struct("<HHIII")


class ProgramError(RuntimeError):
    """A BPF module could not be built or loaded."""


@dataclass(frozen=True)
class ProgramConfig:
    """Capture settings compiled into every module."""

    #: Bytes of each str/bytes argument captured; longer values are cut and marked.
    string_max: int = 256
    #: Spans shorter than this never leave the kernel (0: keep all).
    min_duration_ns: int = 0
    #: Open (started, not ended) spans remembered per span type; beyond, starts are dropped and counted.
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
SPAN_START_FIXED = ("u64", "u64", "u64", "u64", "u32")   # span_id, parent, trace hi, trace lo, flags
SPAN_END_FIXED = ("u64", "u8", "str", "str", "u32")      # span_id, status, error type, message, flags
EVENT_FIXED = ("u64", "u64", "u64", "u32")               # span_id, trace hi, trace lo, flags
INT_TYPES = {"i8": (1, True), "i16": (2, True), "i32": (4, True), "i64": (8, True),
             "u8": (1, False), "u16": (2, False), "u32": (4, False), "u64": (8, False)}


def _align8(n: int) -> int:
    return (n + 7) & ~7


@dataclass
class ArgField:
    """One argument's place in a record: its word, and its slot if it is a str or bytes."""

    index: int
    name: str
    type: str
    loc: argspec.ArgLocation
    word: int               # byte offset of the 64-bit word in the record
    slot: int = 0           # byte offset of the str/bytes slot
    slot_size: int = 0


def _place(probe: ProbeInfo, words_at: int, string_max: int) -> Tuple[List[ArgField], int]:
    """Lay out a probe's arguments: all words first, then the slots. Returns (fields, end)."""
    fields = []
    pos = words_at + 8 * len(probe.args)
    for i, ((name, typ), loc) in enumerate(zip(probe.args, probe.specs)):
        f = ArgField(i, name, typ, loc, words_at + 8 * i)
        if typ in ("str", "bytes"):
            f.slot = pos
            f.slot_size = string_max + 2 if typ == "str" else string_max
            pos += f.slot_size
        fields.append(f)
    return fields, pos


@dataclass
class SpanDef:
    """A span type: what the schema says about it, and where its record keeps what."""

    index: int
    name: str
    kind: str
    provider: str
    code: Optional[dict]
    start: ProbeInfo
    end: ProbeInfo
    start_fields: List[ArgField] = field(default_factory=list)
    end_fields: List[ArgField] = field(default_factory=list)
    start_size: int = 0
    record_size: int = 0
    end_words_at: int = 0


@dataclass
class PointDef:
    """An event probe (role "event") or a plain probe (role "plain")."""

    index: int
    name: str            # event name, or "<provider>.<probe>" for plain probes
    role: str
    provider: str
    probe: ProbeInfo
    fields: List[ArgField] = field(default_factory=list)
    record_size: int = 0


class Layout:
    """The rendered shape of one provider: span and point definitions, and which handler serves which probe."""

    def __init__(self, image: ProviderImage, config: ProgramConfig, warn: Callable[[str], None] = log.warning):
        self.image = image
        self.config = config
        self.provider = image.provider
        self.machine = image.machine
        self.spans: List[SpanDef] = []
        self.points: List[PointDef] = []
        #: probe name -> (handler function name, ("start"|"end", SpanDef) or ("point", PointDef))
        self.handlers: Dict[str, Tuple[str, tuple]] = {}
        self._build(warn)
        self.key = self._key()

    # --- shape ---------------------------------------------------------------

    def _build(self, warn):
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
            self.spans.append(SpanDef(len(self.spans), str(name), entry.get("kind", "internal"),
                                      self.provider, entry.get("code"), start, end))
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
            self.points.append(PointDef(len(self.points), str(name), probe.role, self.provider, probe))

        sm = self.config.string_max
        for s in self.spans:
            # The start struct sits at offset 32 of the span record; offsets are record-absolute.
            s.start_fields, end = _place(s.start, 48, sm)
            s.start_size = _align8(end - 32)
            s.end_words_at = 32 + s.start_size
            s.end_fields, end = _place(s.end, s.end_words_at, sm)
            s.record_size = _align8(end)
            self.handlers[s.start.name] = ("sp_span%d_start" % s.index, ("start", s))
            self.handlers[s.end.name] = ("sp_span%d_end" % s.index, ("end", s))
        for p in self.points:
            p.fields, end = _place(p.probe, 32, sm)
            p.record_size = _align8(end)
            self.handlers[p.probe.name] = ("sp_point%d" % p.index, ("point", p))

    def _key(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(self.image.schema, sort_keys=True).encode())
        h.update(repr((self.machine, self.config,
                       sorted((p.name, p.spec_text) for p in self.image.probes.values()))).encode())
        return h.hexdigest()

    @property
    def empty(self) -> bool:
        return not self.handlers

    # --- C ---------------------------------------------------------------------

    def render(self, program_id: int) -> str:
        template = _bpf_source("spans.c")
        defines = ("#define SP_RINGBUF_BYTES %d\n#define SP_PROGRAM %d\n#define SP_STR_MAX %d\n"
                   "#define SP_MIN_NS %dULL\n#define SP_MAX_OPEN %d\n"
                   % (self.config.ringbuf_bytes, program_id, self.config.string_max,
                      self.config.min_duration_ns, self.config.max_open_spans))
        decls, handlers = [], []
        for s in self.spans:
            decls.append(self._render_span_decls(s))
            handlers.append(self._render_start(s))
            handlers.append(self._render_end(s))
        for p in self.points:
            decls.append(self._render_point_decls(p))
            handlers.append(self._render_point(p))
        return (template.replace("/*@COMMON@*/", defines + _bpf_source("common.h"))
                .replace("/*@DECLARATIONS@*/", "\n".join(decls))
                .replace("/*@HANDLERS@*/", "\n".join(handlers)))

    @staticmethod
    def _slot_decls(fields: Sequence[ArgField]) -> List[str]:
        return ["    char s%d[%d];" % (f.index, f.slot_size) for f in fields if f.slot_size]

    @staticmethod
    def _asserts(struct_name: str, size: int, members: Sequence[Tuple[str, int]]) -> List[str]:
        out = ["_Static_assert(sizeof(struct %s) == %d, \"%s size\");" % (struct_name, size, struct_name)]
        out += ["_Static_assert(__builtin_offsetof(struct %s, %s) == %d, \"%s.%s\");"
                % (struct_name, m, off, struct_name, m) for m, off in members]
        return out

    def _render_span_decls(self, s: SpanDef) -> str:
        i = s.index
        lines = ["/* span %d: %s (%s -> %s) */" % (i, _c_comment(s.name), s.start.name, s.end.name),
                 "struct sp_start_%d {" % i, "    u64 start_ns;", "    u32 tid;", "    u32 fail;",
                 "    u64 w[%d];" % len(s.start.args)]
        lines += self._slot_decls(s.start_fields)
        lines += ["};", "struct sp_span_%d {" % i, "    struct sp_hdr h;", "    u64 end_ns;",
                  "    u32 end_fail;", "    u32 pad;", "    struct sp_start_%d st;" % i,
                  "    u64 ew[%d];" % len(s.end.args)]
        lines += self._slot_decls(s.end_fields)
        lines += ["};"]
        lines += self._asserts("sp_start_%d" % i, s.start_size,
                               [("s%d" % f.index, f.slot - 32) for f in s.start_fields if f.slot_size])
        lines += self._asserts("sp_span_%d" % i, s.record_size,
                               [("st", 32), ("ew", s.end_words_at)]
                               + [("s%d" % f.index, f.slot) for f in s.end_fields if f.slot_size])
        lines += ["BPF_F_TABLE(\"hash\", struct sp_key, struct sp_start_%d, sp_starts_%d, SP_MAX_OPEN, "
                  "BPF_F_NO_PREALLOC);" % (i, i),
                  "BPF_ARRAY(sp_zero_%d, struct sp_start_%d, 1);" % (i, i), ""]
        return "\n".join(lines)

    def _render_point_decls(self, p: PointDef) -> str:
        i = p.index
        lines = ["/* %s probe %d: %s */" % (p.role, i, _c_comment(p.name)),
                 "struct sp_point_%d {" % i, "    struct sp_hdr h;", "    u64 ts;", "    u32 fail;",
                 "    u32 pad;"]
        if p.probe.args:
            lines.append("    u64 w[%d];" % len(p.probe.args))
        lines += self._slot_decls(p.fields)
        lines += ["};"]
        lines += self._asserts("sp_point_%d" % i, p.record_size,
                               [("s%d" % f.index, f.slot) for f in p.fields if f.slot_size])
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
                out.append("      if (bpf_probe_read_user_str(%s, sizeof(%s), (void *)_p) < 0) { %s[0] = 0; %s } }"
                           % (slot, slot, slot, bit))
            elif f.type == "bytes":
                slot = "%s->s%d" % (base, f.index)
                out.append("    { u64 _p = 0; u32 _h = 0; %s" % argspec.render_read(f.loc, self.machine, "_p", bit))
                out.append("      if (bpf_probe_read_user(&_h, 4, (void *)_p) != 0) { %s } else {" % bit)
                out.append("        u32 _n = _h & 0x7fffffff; if (_n > SP_STR_MAX) _n = SP_STR_MAX;")
                out.append("        if (bpf_probe_read_user(%s, _n, (void *)(_p + 4)) != 0) { %s } }" % (slot, bit))
                out.append("      %s = _h; }" % word)
            else:
                out.append("    " + argspec.render_read(f.loc, self.machine, word, bit))
        return out

    def _render_start(self, s: SpanDef) -> str:
        i = s.index
        lines = ["int sp_span%d_start(struct pt_regs *ctx)" % i, "{",
                 "    u64 now = bpf_ktime_get_boot_ns();",
                 "    u64 pid_tgid = bpf_get_current_pid_tgid();",
                 "    u32 fail = 0, zero = 0;",
                 "    u64 span_id = 0;",
                 "    " + argspec.render_read(s.start_fields[0].loc, self.machine, "span_id", "return 0;"),
                 "    struct sp_key k = {};",
                 "    k.tgid = pid_tgid >> 32;",
                 "    k.span_id = span_id;",
                 "    struct sp_start_%d *init = sp_zero_%d.lookup(&zero);" % (i, i),
                 "    if (!init)", "        return 0;",
                 "    struct sp_start_%d *v = sp_starts_%d.lookup_or_try_init(&k, init);" % (i, i),
                 "    if (!v) {", "        sp_count(SP_CNT_START_MAP_FULL);", "        return 0;", "    }",
                 "    v->start_ns = now;", "    v->tid = (u32)pid_tgid;", "    v->w[0] = span_id;"]
        lines += self._read_args(s.start_fields, "v", "w", skip_first=True)
        lines += ["    v->fail = fail;", "    sp_count(SP_CNT_STARTS);", "    return 0;", "}", ""]
        return "\n".join(lines)

    def _render_end(self, s: SpanDef) -> str:
        i = s.index
        lines = ["int sp_span%d_end(struct pt_regs *ctx)" % i, "{",
                 "    u64 now = bpf_ktime_get_boot_ns();",
                 "    u64 pid_tgid = bpf_get_current_pid_tgid();",
                 "    u32 fail = 0;",
                 "    u64 span_id = 0;",
                 "    " + argspec.render_read(s.end_fields[0].loc, self.machine, "span_id", "return 0;"),
                 "    struct sp_key k = {};",
                 "    k.tgid = pid_tgid >> 32;",
                 "    k.span_id = span_id;",
                 "    struct sp_start_%d *st = sp_starts_%d.lookup(&k);" % (i, i),
                 "    if (!st) {", "        sp_count(SP_CNT_END_WITHOUT_START);", "        return 0;", "    }",
                 "    if (SP_MIN_NS && now - st->start_ns < SP_MIN_NS) {",
                 "        sp_starts_%d.delete(&k);" % i,
                 "        sp_count(SP_CNT_FILTERED);", "        return 0;", "    }",
                 "    struct sp_span_%d *r = sp_events.ringbuf_reserve(sizeof(struct sp_span_%d));" % (i, i),
                 "    if (!r) {", "        sp_starts_%d.delete(&k);" % i,
                 "        sp_count(SP_CNT_SPAN_RB_FULL);", "        return 0;", "    }",
                 "    r->h.kind = SP_KIND_SPAN;", "    r->h.index = %d;" % i,
                 "    r->h.program = SP_PROGRAM;", "    r->h.pid = k.tgid;", "    r->h.tid = (u32)pid_tgid;",
                 "    r->end_ns = now;", "    r->pad = 0;",
                 "    bpf_probe_read_kernel(&r->st, sizeof(r->st), st);",
                 "    sp_starts_%d.delete(&k);" % i,
                 "    r->ew[0] = span_id;"]
        lines += self._read_args(s.end_fields, "r", "ew", skip_first=True)
        lines += ["    r->end_fail = fail;", "    sp_events.ringbuf_submit(r, BPF_RB_NO_WAKEUP);",
                  "    sp_count(SP_CNT_SPANS);", "    return 0;", "}", ""]
        return "\n".join(lines)

    def _render_point(self, p: PointDef) -> str:
        i = p.index
        lines = ["int sp_point%d(struct pt_regs *ctx)" % i, "{",
                 "    u64 now = bpf_ktime_get_boot_ns();",
                 "    u64 pid_tgid = bpf_get_current_pid_tgid();",
                 "    u32 fail = 0;",
                 "    struct sp_point_%d *r = sp_events.ringbuf_reserve(sizeof(struct sp_point_%d));" % (i, i),
                 "    if (!r) {", "        sp_count(SP_CNT_POINT_RB_FULL);", "        return 0;", "    }",
                 "    r->h.kind = SP_KIND_POINT;", "    r->h.index = %d;" % i,
                 "    r->h.program = SP_PROGRAM;", "    r->h.pid = pid_tgid >> 32;",
                 "    r->h.tid = (u32)pid_tgid;", "    r->ts = now;", "    r->pad = 0;"]
        lines += self._read_args(p.fields, "r", "w")
        lines += ["    r->fail = fail;", "    sp_events.ringbuf_submit(r, BPF_RB_NO_WAKEUP);",
                  "    sp_count(SP_CNT_POINTS);", "    return 0;", "}", ""]
        return "\n".join(lines)


def _c_comment(text: str) -> str:
    return text.replace("*/", "* /").replace("\n", " ")


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
    """A function (record bytes, word) -> (value, truncated)."""
    if f.type in INT_TYPES:
        size, signed = INT_TYPES[f.type]
        bits = 8 * min(size, f.loc.size)
        mask = (1 << bits) - 1
        sign = 1 << (bits - 1)
        if signed:
            return lambda rec, w: (((w & mask) ^ sign) - sign, False)
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
            length = w & 0x7FFFFFFF
            sdk_cut = bool(w & 0x80000000)
            n = min(length, string_max)
            return bytes(rec[start:start + n]), sdk_cut or length > string_max
        return data
    raise ProgramError("unknown argument type %r" % f.type)


class _AttrDecoder:
    """Decodes the attribute arguments (after the protocol's fixed ones) of one probe."""

    def __init__(self, fields: Sequence[ArgField], first_attr: int, string_max: int):
        self.items = [(f.index, f.index - first_attr, f.name, _value_decoder(f, string_max))
                      for f in fields[first_attr:]]

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


class RecordDecoder:
    """Turns one layout's ring-buffer records into SpanRecords and PointRecords (pure Python)."""

    def __init__(self, layout: Layout):
        self.layout = layout
        sm = layout.config.string_max
        self._span_decoders = []
        for s in layout.spans:
            self._span_decoders.append((
                s, struct.Struct("<%dQ" % len(s.start.args)), struct.Struct("<%dQ" % len(s.end.args)),
                _AttrDecoder(s.start_fields, 5, sm), _AttrDecoder(s.end_fields, 5, sm),
                _value_decoder(s.end_fields[2], sm), _value_decoder(s.end_fields[3], sm)))
        self._point_decoders = []
        for p in layout.points:
            first = 4 if p.role == "event" else 0
            self._point_decoders.append((p, struct.Struct("<%dQ" % len(p.probe.args)),
                                         _AttrDecoder(p.fields, first, sm)))

    def decode_span(self, rec: bytes, index: int, pid: int, tid: int) -> SpanRecord:
        s, start_words, end_words, start_attrs, end_attrs, err_type, err_msg = self._span_decoders[index]
        end_ns, end_fail, start_ns, start_tid, start_fail = _SPAN_FIXED.unpack_from(rec, 16)
        sw = start_words.unpack_from(rec, 48)
        ew = end_words.unpack_from(rec, s.end_words_at)
        sflags, eflags = sw[4] & 0xFFFFFFFF, ew[4] & 0xFFFFFFFF
        attrs: dict = {}
        notes = start_attrs.decode(rec, sw, start_fail, sflags >> 8, attrs, None) if start_attrs.items else None
        if end_attrs.items:
            notes = end_attrs.decode(rec, ew, end_fail, eflags >> 8, attrs, notes)
        status = ew[1] & 0xFF
        if status:
            error_type = err_type(rec, ew[2])[0] if not end_fail & 4 else ""
            error_message = err_msg(rec, ew[3])[0] if not end_fail & 8 else ""
        else:
            error_type = error_message = ""
        return SpanRecord(s, pid, tid, start_tid, start_ns, end_ns, (sw[2] << 64) | sw[3], sw[0],
                          sw[1], sflags & 0xFF, status, error_type, error_message, attrs, notes)

    def decode_point(self, rec: bytes, index: int, pid: int, tid: int) -> PointRecord:
        p, words_struct, attrs_dec = self._point_decoders[index]
        ts, fail = struct.unpack_from("<QI", rec, 16)
        words = words_struct.unpack_from(rec, 32)
        attrs: dict = {}
        if p.role == "event":
            flags = words[3] & 0xFFFFFFFF
            notes = attrs_dec.decode(rec, words, fail, flags >> 8, attrs, None)
            return PointRecord(p, pid, tid, ts, words[0], (words[1] << 64) | words[2], flags & 0xFF,
                               attrs, notes)
        notes = attrs_dec.decode(rec, words, fail, 0, attrs, None)
        return PointRecord(p, pid, tid, ts, 0, 0, 0, attrs, notes)


_SPAN_FIXED = struct.Struct("<QI4xQII")  # end_ns, end_fail, pad, start_ns, start_tid, start_fail


class Module:
    """A compiled, loaded provider module (one per layout) and its record decoder."""

    def __init__(self, program_id: int, layout: Layout, bpf):
        self.id = program_id
        self.layout = layout
        self.bpf = bpf
        self.prog_fds: Dict[str, int] = {}
        from bcc import BPF  # noqa: lazy: bcc exists only in Debian's python
        for probe, (fn, _) in layout.handlers.items():
            self.prog_fds[probe] = bpf.load_func(fn.encode(), BPF.KPROBE).fd
        self.decoder = RecordDecoder(layout)

    def reap(self, pid: int, older_than_ns: Optional[int] = None) -> int:
        """Delete open-span entries of ``pid`` (all pids if None) started before ``older_than_ns``.

        Returns how many were removed: starts whose end will never come (the
        process exited, or the span has been open longer than anyone waits).
        """
        removed = 0
        for s in self.layout.spans:
            table = self.bpf.get_table("sp_starts_%d" % s.index)
            doomed = []
            for k, v in table.items():
                if (pid is None or k.tgid == pid) and (older_than_ns is None or v.start_ns < older_than_ns):
                    doomed.append(k)
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


class Programs:
    """The core module plus one module per provider layout, compiled on demand.

    ``module_for`` may be called from a worker thread: bcc's compile runs in
    C without the GIL, so the tracer keeps draining the ring buffer meanwhile.
    """

    def __init__(self, config: ProgramConfig, warn: Callable[[str], None] = log.warning):
        config.check()
        self.config = config
        self._warn = warn
        self._lock = threading.Lock()
        self._by_key: Dict[str, Module] = {}
        self._by_id: Dict[int, Module] = {}
        self._next_id = 1
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

    def layout_for(self, image: ProviderImage) -> Layout:
        return Layout(image, self.config, self._warn)

    def module_for(self, layout: Layout) -> Module:
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
            raise ProgramError("cannot build the BPF module for provider %s (%s)" % (layout.provider, exc)) from exc
        with self._lock:
            existing = self._by_key.get(layout.key)
            if existing is not None:  # another thread won the race
                module.close()
                return existing
            self._by_key[layout.key] = module
            self._by_id[program_id] = module
        log.debug("compiled BPF module %d for provider %s (%d spans, %d points)",
                  program_id, layout.provider, len(layout.spans), len(layout.points))
        return module

    @property
    def modules(self) -> List[Module]:
        with self._lock:
            return list(self._by_id.values())

    def decode(self, rec: bytes):
        """A SpanRecord, PointRecord or LoadRecord from one ring-buffer record (None if unknown)."""
        kind, index, program, pid, tid = _HDR.unpack_from(rec, 0)
        if kind == KIND_LOAD:
            return LoadRecord(pid, tid)
        module = self._by_id.get(program)
        if module is None:
            return None
        if kind == KIND_SPAN:
            return module.decoder.decode_span(rec, index, pid, tid)
        if kind == KIND_POINT:
            return module.decoder.decode_point(rec, index, pid, tid)
        return None

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
