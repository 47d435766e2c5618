"""The C: each module's source rendered from its layout, and the core module's.

A provider module is bpf/spans.c with its declarations and handlers filled
in: per span shape, the start struct, the record struct (with a
_Static_assert of every offset kernel.layout computed), the open-span map,
and the start and end handlers; per point shape, its record struct and
handler. The capture config adds the sampler's decision at span start (and for
events) and the span metrics at span end, before anything can drop the span
(kernel.sampling, kernel.metrics). Each argument is read where its SDT note says it is
(``render_read``). The core module is bpf/core.c after bpf/common.h, with the
dlopen() path matcher rendered from the SDK's protocol constants (the paths
the SDK dlopen()s a provider from), so the two cannot drift apart. Both start
with the record kinds and counter slots, #defined from kernel.layout and
kernel.counters (``common_header``).

``spanprobe trace --ebpf`` prints what these functions return.
"""

from __future__ import annotations

import struct
from importlib import resources
from typing import List, Sequence, Tuple

from spanprobe.abi.protocol import (BYTES_TRUNCATED, END_ARGS, PAYLOAD_STR, PAYLOAD_TIME_WORD, PRIVATE_DIR_PREFIX,
                                    PROC_SELF, ROLE_EVENT, START_ARGS, payload_format, payload_words)
from spanprobe.abi.types import ArgType
from spanprobe.elf.arch import EM_X86_64

from ..discover.argspec import ArgLocation
from . import metrics, sampling
from .counters import NCOUNTERS, Counter
from .layout import (HDR_SIZE, KIND_LOAD, KIND_NAME, KIND_POINT, KIND_SPAN, NAME_TEXT_AT, SPAN_START_AT, ArgField,
                     ArgShape, CaptureConfig, ModuleLayout, PointShape, SpanShape)


def bpf_source(name: str) -> str:
    """One of the C files shipped in package spanprobe_tracer.bpf (top-level bpf/ in the repository)."""
    return resources.files("spanprobe_tracer.bpf").joinpath(name).read_text()


def common_header() -> str:
    """bpf/common.h, after the record kinds and counter slots it uses, #defined from kernel.layout and
    kernel.counters (every module, the core included, starts with it)."""
    kinds = {"SPAN": KIND_SPAN, "POINT": KIND_POINT, "LOAD": KIND_LOAD, "NAME": KIND_NAME}
    defines = ["#define SP_KIND_%s %d" % kv for kv in kinds.items()]
    defines += ["#define SP_CNT_%s %d" % (c.name, c.value) for c in Counter]
    defines.append("#define SP_NCOUNTERS %d" % NCOUNTERS)
    return "\n".join(defines) + "\n" + bpf_source("common.h")


def _ring_sizes(config: CaptureConfig) -> str:
    """The #defines of the two ring buffers' sizes (bpf/common.h declares them)."""
    return "#define SP_RINGBUF_BYTES %d\n#define SP_RESCUE_BYTES %d\n" % (config.ringbuf_bytes, config.rescue_bytes)


# --- argument reads ------------------------------------------------------------------------

def _reg_expr(loc: ArgLocation, machine: int) -> str:
    if machine == EM_X86_64:
        return "ctx->%s" % loc.reg
    if loc.reg == "sp":
        return "ctx->sp"
    return "ctx->regs[%d]" % int(loc.reg)


def render_read(loc: ArgLocation, machine: int, dest: str, fail: str) -> str:
    """C statements that store the argument's raw 64-bit word into ``dest``.

    The word keeps the register's full width; the decoder masks and
    sign-extends it to the size in the spec. Memory operands read exactly
    ``size`` bytes, so nothing past the argument is touched; when that read
    faults, the statement ``fail`` runs.
    """
    if loc.kind == "imm":
        return "%s = (u64)(%dLL);" % (dest, loc.offset)
    if loc.kind == "reg":
        return "%s = (u64)%s;" % (dest, _reg_expr(loc, machine))
    return ("{ u64 _v = 0; if (bpf_probe_read_user(&_v, %d, (void *)(%s + (%d))) != 0) "
            "{ %s } %s = _v; }" % (loc.size, _reg_expr(loc, machine), loc.offset, fail, dest))


# --- provider modules ------------------------------------------------------------------------

def render_module(layout: ModuleLayout, program_id: int) -> str:
    """The C source of the module ``layout`` describes; ``program_id`` goes into its records' headers."""
    config = layout.config
    defines = ("%s#define SP_PROGRAM %d\n#define SP_STR_MAX %d\n#define SP_MIN_NS %dULL\n#define SP_MAX_OPEN %d\n"
               % (_ring_sizes(config), program_id, config.string_max, config.min_duration_ns, config.max_open_spans))
    source = _ModuleSource(layout.machine, config)
    decls, handlers = [], []
    if config.sampler.compiled:
        decls.append(sampling.render_sampler(config.sampler))
    if config.metrics:
        decls.append(metrics.render_record(config.histogram_bounds_ns, NAME_TEXT_AT))
    for s in layout.spans:
        decls.append(source.span_decls(s))
        if s.one is not None:
            handlers.append(source.one_handler(s))
        else:
            handlers.append(source.start_handler(s))
            handlers.append(source.end_handler(s))
    for p in layout.points:
        decls.append(source.point_decls(p))
        handlers.append(source.point_handler(p))
    return (bpf_source("spans.c").replace("/*@COMMON@*/", defines + common_header())
            .replace("/*@DECLARATIONS@*/", "\n".join(decls))
            .replace("/*@HANDLERS@*/", "\n".join(handlers)))


def _payload_size(s: SpanShape) -> int:
    """The size of span shape ``s``'s one-hit payload, its bytes header included."""
    return 4 + struct.calcsize(payload_format([ArgType(t) for t, _ in s.start], [ArgType(t) for t, _ in s.end]))


def _n_strs(s: SpanShape, end: bool = True) -> int:
    """How many str attributes span shape ``s`` has (its start probe's only, unless ``end``): the str slots of
    its one-hit payload."""
    attrs = list(s.start[len(START_ARGS):]) + (list(s.end[len(END_ARGS):]) if end else [])
    return sum(t == "str" for t, _ in attrs)


class _ModuleSource:
    """The declarations and handlers of one module, for the machine its probes run on."""

    def __init__(self, machine: int, config: CaptureConfig):
        self.machine = machine
        self.config = config

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

    def span_decls(self, s: SpanShape) -> str:
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
        if s.one is not None:  # the payload as it arrives (bytes header first), and where it is unpacked
            lines += ["struct sp_pay_%d {" % i, "    u32 len;", "    u32 reserved;",
                      "    u64 w[%d];" % (payload_words(len(s.start))[1] + len(s.end)),
                      *(["    char s[%d][%d];" % (_n_strs(s), PAYLOAD_STR)] if _n_strs(s) else []), "};",
                      # the bytes value the SDK packs (spanprobe.abi.protocol.payload_format): header + data,
                      # which the struct holds (its size rounded up to 8 bytes)
                      "#define SP_PAY_%d_SIZE %d" % (i, _payload_size(s)),
                      "_Static_assert(sizeof(struct sp_pay_%d) == (SP_PAY_%d_SIZE + 7) / 8 * 8, \"sp_pay_%d size\");"
                      % (i, i, i),
                      "struct sp_one_%d {" % i, "    u64 busy;", "    struct sp_start_%d st;" % i, "    struct sp_pay_%d p;" % i, "};",
                      "BPF_PERCPU_ARRAY(sp_one_%d, struct sp_one_%d, 1);" % (i, i), ""]
        else:
            lines += ["BPF_F_TABLE(\"hash\", struct sp_key, struct sp_start_%d, sp_starts_%d, SP_MAX_OPEN, "
                      "BPF_F_NO_PREALLOC);" % (i, i),
                      "BPF_ARRAY(sp_zero_%d, struct sp_start_%d, 1);" % (i, i), ""]
        return "\n".join(lines)

    def point_decls(self, p: PointShape) -> str:
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

    def _register(self, f: ArgField, dest: str, fail: str) -> str:
        """Read argument ``f`` where its probe site puts it (a start, end, event or plain probe)."""
        return render_read(f.loc, self.machine, dest, fail)

    @staticmethod
    def _payload(first: int):
        """A reader of the one-hit span payload ``o->p``'s words, the probe's arguments from word ``first``."""
        return lambda f, dest, fail: "%s = o->p.w[%d];" % (dest, first + f.index)

    @staticmethod
    def _payload_strs(s: SpanShape, fields: Sequence[ArgField], fixed: int, first: int):
        """{field index: (its str slot in the one-hit payload ``o->p``, whether that slot is 8-byte aligned)} for
        the str attributes of ``fields`` (after ``fixed`` fixed arguments) of span shape ``s``, whose first takes
        slot ``first`` (the slots end the payload)."""
        slots_at = _payload_size(s) - PAYLOAD_STR * _n_strs(s)
        indexes = [f.index for f in fields[fixed:] if f.type == "str"]
        return {index: ("o->p.s[%d]" % (first + k), (slots_at + PAYLOAD_STR * (first + k)) % 8 == 0)
                for k, index in enumerate(indexes)}

    def _read_args(self, fields: Sequence[ArgField], base: str, words: str, skip_first: bool = False,
                   read=None, inline=None) -> List[str]:
        """Statements reading each argument (by ``read(field, dest, fail)``, else from its probe site) into
        ``base``->``words``[i] and its slot; a str in ``inline`` ({field index: payload slot}) is copied from
        the payload already read, cut where bpf_probe_read_user_str would cut it: by plain loads and stores
        where both slots are 8-byte aligned (a bpf_probe_read_kernel call costs ~70 ns more in the handler
        here), else by that helper (a misaligned copy would go byte by byte)."""
        read = read or self._register
        inline = inline or {}
        out = []
        for f in fields:
            if skip_first and f.index == 0:
                continue
            bit = "fail |= (1u << %d);" % f.index
            word = "%s->%s[%d]" % (base, words, f.index)
            if f.index in inline:
                slot, n = "%s->s%d" % (base, f.index), min(f.slot_size - 1, PAYLOAD_STR)
                src, aligned = inline[f.index]
                # an empty string (NULL included) without a copy; else its first string_max + 1 bytes, then a
                # NUL: what the start or end handler's bpf_probe_read_user_str leaves
                out.append("    %s = 0; if (!%s[0]) %s[0] = 0;" % (word, src, slot))
                if aligned and f.slot % 8 == 0:
                    out.append("    else { __builtin_memcpy(%s, %s, %d); %s[%d] = 0; }" % (slot, src, n, slot, n))
                else:
                    out.append("    else if (bpf_probe_read_kernel(%s, %d, %s) != 0) { %s[0] = 0; %s } else %s[%d] = 0;"
                               % (slot, n, src, slot, bit, slot, n))
            elif f.type == "str":
                slot = "%s->s%d" % (base, f.index)
                out.append("    { u64 _p = 0; %s %s = _p;" % (read(f, "_p", bit), word))
                # NULL is "no value" (docs/abi.md): an empty string, without a read that would fault.
                out.append("      if (!_p) %s[0] = 0;" % slot)
                out.append("      else if (bpf_probe_read_user_str(%s, sizeof(%s), (void *)_p) < 0) { %s[0] = 0; %s } }"
                           % (slot, slot, slot, bit))
            elif f.type == "bytes":
                slot = "%s->s%d" % (base, f.index)
                out.append("    { u64 _p = 0; u32 _h = 0; %s" % read(f, "_p", bit))
                out.append("      if (bpf_probe_read_user(&_h, 4, (void *)_p) != 0) { %s } else {" % bit)
                out.append("        u32 _n = _h & %#x; if (_n > %d) _n = %d;"
                           % (BYTES_TRUNCATED - 1, f.slot_size, f.slot_size))
                out.append("        if (bpf_probe_read_user(%s, _n, (void *)(_p + 4)) != 0) { %s } }" % (slot, bit))
                out.append("      %s = _h; }" % word)
            else:
                out.append("    " + read(f, word, bit))
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
                "    " + render_read(span_id.loc, self.machine, "span_id", "return 0;"),
                "    struct sp_key k = {};",
                "    k.tgid = pid_tgid >> 32;",
                "    k.span_id = span_id;"]

    @staticmethod
    def _record_header(kind: str, shape: int, pid: str, cookie: str = "sp_attach_cookie(ctx)") -> List[str]:
        """The sp_hdr of a reserved ring-buffer record ``r``: what userspace decodes it by."""
        return ["    r->h.kind = %s;" % kind, "    r->h.shape = %d;" % shape,
                "    r->h.program = SP_PROGRAM;", "    r->h.pid = %s;" % pid, "    r->h.tid = (u32)pid_tgid;",
                "    r->h.cookie = %s;" % cookie]

    @staticmethod
    def _submit(fail: str, counter: str) -> List[str]:
        """Close a handler: record ``r``'s read failures, hand it over (no wakeup: drained on a timer)."""
        return ["    r->%s = fail;" % fail, "    sp_events.ringbuf_submit(r, BPF_RB_NO_WAKEUP);",
                "    sp_count(%s);" % counter, "    return 0;", "}", ""]

    def start_handler(self, s: SpanShape) -> str:
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
        if self.config.sampler.compiled:
            lines.append(sampling.render_decide("v"))
        lines += ["    v->fail = fail;", "    sp_count(SP_CNT_STARTS);", "    return 0;", "}", ""]
        return "\n".join(lines)

    def end_handler(self, s: SpanShape) -> str:
        i = s.index
        lines = self._handler_head(s.end_fn, "fail = 0") + self._span_key(s.end_fields[0])
        lines += ["    u64 cookie = sp_attach_cookie(ctx);",
                  "    struct sp_start_%d *st = sp_starts_%d.lookup(&k);" % (i, i),
                  "    if (!st) {", "        sp_count(SP_CNT_END_WITHOUT_START);", "        return 0;", "    }"]
        return "\n".join(lines + self._finish(s, "        sp_starts_%d.delete(&k);" % i, "k.tgid", self._register))

    def one_handler(self, s: SpanShape) -> str:
        """The one-hit span probe's handler: the payload (one read) into a per-CPU start struct, filled as
        the start handler fills a stored one, then what the end handler does with it. The per-CPU struct is
        held by a busy flag: a handler preempted mid-way (a fully preemptible kernel) keeps it, and a hit
        on that CPU meanwhile is dropped and counted (ONE_HIT_BUSY) instead of writing over it."""
        i = s.index
        first_start, first_end = payload_words(len(s.start))
        body = "%s_body" % s.one_fn
        lines = ["static __always_inline int %s(struct pt_regs *ctx, struct sp_one_%d *o, u64 now, u64 pid_tgid, "
                 "u64 p)" % (body, i), "{", "    u32 fail = 0;",
                 "    if (bpf_probe_read_user(&o->p, SP_PAY_%d_SIZE, (void *)p) != 0"
                 " || o->p.len != SP_PAY_%d_SIZE - 4) {" % (i, i),
                 "        sp_count(SP_CNT_BAD_SPAN_PAYLOAD);", "        return 0;", "    }",
                 "    struct sp_start_%d *st = &o->st;" % i,
                 "    st->start_ns = o->p.w[%d];" % PAYLOAD_TIME_WORD, "    st->tid = (u32)pid_tgid;"]
        lines += self._read_args(s.start_fields, "st", "w", read=self._payload(first_start),
                                 inline=self._payload_strs(s, s.start_fields, len(START_ARGS), 0))
        if self.config.sampler.compiled:
            lines.append(sampling.render_decide("st"))
        lines += ["    st->fail = fail;", "    sp_count(SP_CNT_STARTS);", "    fail = 0;",
                  "    u64 span_id = o->p.w[%d];" % first_end, "    u64 cookie = sp_attach_cookie(ctx);"]
        lines += self._finish(s, "", "pid_tgid >> 32", self._payload(first_end),
                              self._payload_strs(s, s.end_fields, len(END_ARGS), _n_strs(s, end=False)))
        lines += self._handler_head(s.one_fn, "zero = 0")
        lines += ["    u64 p = 0;", "    " + render_read(s.one, self.machine, "p", "return 0;"),
                  "    struct sp_one_%d *o = sp_one_%d.lookup(&zero);" % (i, i),
                  "    if (!o)", "        return 0;",
                  "    if (__sync_val_compare_and_swap(&o->busy, 0, 1) != 0) {",
                  "        sp_count(SP_CNT_ONE_HIT_BUSY);", "        return 0;", "    }",
                  "    %s(ctx, o, now, pid_tgid, p);" % body,
                  "    asm volatile(\"\" ::: \"memory\");  /* o's every use above, before it is let go */",
                  "    o->busy = 0;", "    return 0;", "}", ""]
        return "\n".join(lines)

    def _finish(self, s: SpanShape, forget: str, pid: str, read, inline=None) -> List[str]:
        """An ended span's path, ``st`` its start, ``span_id`` and ``cookie`` known, end arguments read by
        ``read``: span metrics, sampling, the duration threshold, then one ring-buffer record. ``forget``
        drops the stored start wherever the path ends."""
        i = s.index
        config = self.config
        lines = []
        if config.metrics:  # every span that ended, before anything can drop it
            status = s.end_fields[metrics.STATUS_ARG]
            lines.append(metrics.render_end(read(status, "status", "")))
            if s.http is not None:
                lines.append(self._http_end(s, read))
        if config.sampler.stateful:
            lines.append(sampling.render_forget(config.sampler, "st"))
        forget = [forget] if forget else []
        if config.sampler.compiled:
            lines += ["    if (st->fail & SP_ST_DROP) {", *forget,
                      "        sp_count(SP_CNT_SAMPLED_OUT);", "        return 0;", "    }"]
        lines += ["    if (SP_MIN_NS && now - st->start_ns < SP_MIN_NS) {", *forget,
                  "        sp_count(SP_CNT_FILTERED);", "        return 0;", "    }",
                  "    struct sp_span_%d *r = sp_reserve(sizeof(struct sp_span_%d), SP_CNT_SPAN_RB_FULL, "
                  "SP_CNT_SPAN_RESERVE_FAILED);" % (i, i),
                  "    if (!r) {", *forget, "        return 0;", "    }"]
        lines += self._record_header("SP_KIND_SPAN", i, pid, "cookie")
        lines += ["    r->end_ns = now;", "    r->pad = 0;",
                  "    bpf_probe_read_kernel(&r->st, sizeof(r->st), st);"]
        if config.sampler.compiled:  # the kernel's own bits are not argument read failures
            lines.append("    r->st.fail &= ~(SP_ST_DROP | SP_ST_OWNER);")
            lines.append(sampling.render_written(config.sampler, "r"))
        lines += [f[4:] for f in forget] + ["    r->ew[0] = span_id;"]
        lines += self._read_args(s.end_fields, "r", "ew", skip_first=True, read=read, inline=inline)
        lines += self._submit("end_fail", "SP_CNT_SPANS")
        return lines

    def _http_end(self, s: SpanShape, read) -> str:
        """An HTTP server span's http.server.request.duration (kernel.metrics), its status code read as its type."""
        http = s.http
        status_read = ""
        if http.status >= 0:
            f = s.end_fields[http.status]
            status_read = "{ u64 hraw = 0; %s hstatus = (s64)(%s%d)hraw; }" % (
                read(f, "hraw", ""), "s" if f.loc.signed else "u", 8 * f.loc.size)
        return metrics.render_http_end(http, "st->s%d" % http.method,
                                       "st->s%d" % http.route if http.route >= 0 else None, status_read)

    def point_handler(self, p: PointShape) -> str:
        i = p.index
        lines = self._handler_head(p.fn, "fail = 0")
        if p.role == ROLE_EVENT and self.config.sampler.compiled:
            lines.append("    u64 e[4] = {};")
            lines += ["    " + render_read(p.fields[at].loc, self.machine, "e[%d]" % j, "")
                      for j, at in enumerate(sampling.EVENT_ARGS)]
            lines += ["    if (sp_sample_event(e[0], e[1], e[2], e[3]) & SP_ST_DROP) {",
                      "        sp_count(SP_CNT_POINT_SAMPLED_OUT);", "        return 0;", "    }"]
        lines += ["    struct sp_point_%d *r = sp_reserve(sizeof(struct sp_point_%d), SP_CNT_POINT_RB_FULL, "
                  "SP_CNT_POINT_RESERVE_FAILED);" % (i, i),
                  "    if (!r) {", "        return 0;", "    }"]
        if self.config.sampler.compiled:
            lines.append(sampling.render_written(self.config.sampler, "r"))
        lines += self._record_header("SP_KIND_POINT", i, "pid_tgid >> 32")
        lines += ["    r->ts = now;", "    r->pad = 0;"]
        lines += self._read_args(p.fields, "r", "w")
        lines += self._submit("fail", "SP_CNT_POINTS")
        return "\n".join(lines)


# --- the core module ---------------------------------------------------------------------------

def _c_char(c: str) -> str:
    return "'%s'" % c if c.isascii() and (c.isalnum() or c in "/-_.:") else str(ord(c))


def _c_spelled_at(text: str, index: str) -> str:
    """A C condition: ``name[index...]`` spells ``text`` (one comparison a character, as the verifier
    needs: no loop, no library call)."""
    return " && ".join("name[%s%d] == %s" % (index, i, _c_char(c)) for i, c in enumerate(text))


def path_matcher() -> str:
    """The #defines bpf/core.c's sp_provider_path() is written with, from spanprobe.abi.protocol:
    a dlopen() path is a provider's when it starts with PROC_SELF (a memfd, /proc/self/fd/N) or
    holds "/" + PRIVATE_DIR_PREFIX (a file in the SDK's private directory)."""
    proc_self = PROC_SELF + "/"
    private_dir = "/" + PRIVATE_DIR_PREFIX
    return ("#define SP_AT_PROC_SELF(name) (%s)\n"
            "#define SP_PRIVATE_DIR_LEN %d\n"
            "#define SP_AT_PRIVATE_DIR(name, i) (%s)\n"
            % (_c_spelled_at(proc_self, ""), len(private_dir), _c_spelled_at(private_dir, "(i) + ")))


def render_core(config: CaptureConfig) -> str:
    """The core module's C: the ring buffer and counters every module writes to, the maps of sampling and
    span metrics (as the config uses them), and the dlopen() watcher."""
    shared = sampling.core_declarations(config.sampler) if config.sampler.compiled else ""
    if config.metrics:
        shared += metrics.core_declarations(len(config.histogram_bounds_ns) + 1)
    return ("#include <uapi/linux/ptrace.h>\n#define SP_CORE\n" + _ring_sizes(config) + common_header() + shared
            + path_matcher() + bpf_source("core.c"))
