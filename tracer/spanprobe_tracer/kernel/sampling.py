"""Sampling in the kernel: which spans leave it, decided at span start from the trace id.

``spanprobe trace`` honours OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (and
--sampler / --sampler-arg, which override them). The decision is the
OpenTelemetry SDK's: TraceIdRatioBased keeps a trace when the low 64 bits of
its id are below ``round(ratio * 2**64)``, so every span of a trace is kept or
dropped together, in every process and on every host with the same ratio.
ParentBased modes take the W3C sampled flag (flags bit 0) the application sent
for a span with a parent, the root sampler's decision for a root span.

The SDK marks every trace it starts sampled (it does not know the tracer's
decision), so in the modes where a root can be dropped while its children
carry the sampled flag (parentbased_traceidratio, parentbased_always_off) and
in the adaptive mode (whose ratio moves), the decision is *remembered*: the
first span of a trace to start on this host decides, its decision goes into
the core module's map sp_traces (trace id -> keep), every later span of that
trace on this host follows it, and the span that decided removes it when it
ends. The stateless modes need no map and no state.

This module renders the C (``render_sampler``: a function the start handler
calls, returning the bits it keeps in the start struct's fail word) and the
core module's declarations; ``Sampler.keep`` is the same rule in Python.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Mapping, Optional

from spanprobe.abi.protocol import FIXED_ARGS, ROLE_EVENT, ROLE_SPAN_START, TRACE_FLAG_SAMPLED

from ..errors import ExitStatus, TracerError

#: Samplers by their OTEL_TRACES_SAMPLER name; "adaptive" is spanprobe's own.
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
            "parentbased_traceidratio", "adaptive")
#: The SDK's default (OpenTelemetry specification: parentbased_always_on).
DEFAULT_SAMPLER = "parentbased_always_on"
#: 2**64: TraceIdRatioBased's bound for ratio 1 (every low-64-bit value is below it).
ID_SPACE = 1 << 64
#: Bits of a stored start's fail word the kernel keeps for itself (argument bits are 0..11):
#: SP_ST_DROP the span is sampled out; SP_ST_OWNER its start put its trace's decision in sp_traces.
ST_DROP, ST_OWNER = 1 << 31, 1 << 30
#: Traces whose decision is remembered at once (sp_traces, an LRU hash: the oldest go first).
TRACE_MAP_SIZE = 65536
#: Slots of the adaptive sampler's array sp_sampling: the bound (set by userspace), the record bytes userspace
#: has read from the ring buffer (set by userspace), the record bytes the handlers have written (kernel).
SLOT_BOUND, SLOT_READ, SLOT_WRITTEN = 0, 1, 2
SLOTS = 3
#: Positions of the span start probe's fixed arguments the decision reads (docs/abi.md).
_START = {name: i for i, (name, _) in enumerate(FIXED_ARGS[ROLE_SPAN_START])}
#: ... and of the event probe's: an event follows its trace's decision (``render_sampler``).
EVENT_ARGS = tuple([name for name, _ in FIXED_ARGS[ROLE_EVENT]].index(n)
                   for n in ("span_id", "trace_id_high", "trace_id_low", "flags"))


def bound_for(ratio: float) -> int:
    """TraceIdRatioBased.get_bound_for_rate: keep a trace when its low 64 bits are below this."""
    return round(ratio * ID_SPACE)


@dataclass(frozen=True)
class Sampler:
    """A sampler: its name and, for ratio samplers, the ratio; for adaptive, the spans/s ceiling (0: none)."""

    name: str = DEFAULT_SAMPLER
    ratio: float = 1.0
    max_rate: float = 0.0

    @property
    def root(self) -> str:
        """The decision for a span without a parent: always_on, always_off or traceidratio."""
        base = self.name[len("parentbased_"):] if self.name.startswith("parentbased_") else self.name
        return "traceidratio" if base == "adaptive" else base

    @property
    def parent_based(self) -> bool:
        return self.name.startswith("parentbased_")

    @property
    def stateful(self) -> bool:
        """Is each trace's decision remembered in sp_traces (see the module docstring)?"""
        return self.name in ("parentbased_traceidratio", "parentbased_always_off", "adaptive")

    @property
    def compiled(self) -> bool:
        """Does the start handler decide at all? (always_on keeps everything: no code is compiled.)"""
        return self.name != "always_on"

    @property
    def bound(self) -> int:
        return bound_for(self.ratio)

    def keep(self, trace_id: int, parent_span_id: int = 0, flags: int = TRACE_FLAG_SAMPLED,
             bound: Optional[int] = None) -> bool:
        """The decision for a span whose trace has no remembered decision (the C's rule, in Python)."""
        if self.parent_based and parent_span_id:
            return bool(flags & TRACE_FLAG_SAMPLED)
        if self.root == "always_on":
            return True
        if self.root == "always_off":
            return False
        return (trace_id & (ID_SPACE - 1)) < (self.bound if bound is None else bound)


def _ratio(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise TracerError("%s=%r is not a sampling ratio: give a number from 0 to 1" % (where, text), ExitStatus.USAGE)
    return value


def resolve_sampler(flag: Optional[str] = None, flag_arg: Optional[str] = None,
                    env: Mapping[str, str] = os.environ) -> Sampler:
    """The sampler --sampler/--sampler-arg or OTEL_TRACES_SAMPLER/_ARG ask for (flags first; an empty
    variable counts as unset). A bad name or argument is a TracerError naming the flag or variable."""
    if flag:
        name, name_src = flag.strip().lower(), "--sampler"
    else:
        name, name_src = (env.get("OTEL_TRACES_SAMPLER") or "").strip().lower(), "OTEL_TRACES_SAMPLER"
    if not name:
        name = DEFAULT_SAMPLER
    if name not in SAMPLERS:
        raise TracerError("%s=%r is not a sampler spanprobe knows: one of %s"
                          % (name_src, flag or env.get("OTEL_TRACES_SAMPLER"), ", ".join(SAMPLERS)), ExitStatus.USAGE)
    if flag_arg is not None:
        arg, arg_src = flag_arg.strip(), "--sampler-arg"
    else:
        arg, arg_src = (env.get("OTEL_TRACES_SAMPLER_ARG") or "").strip(), "OTEL_TRACES_SAMPLER_ARG"
    if name == "adaptive":
        if not arg:
            return Sampler(name)
        try:
            rate = float(arg)
        except ValueError:
            rate = math.nan
        if not rate > 0 or math.isinf(rate):
            raise TracerError("%s=%r: the adaptive sampler's argument is the most spans per second to keep, "
                              "a positive number" % (arg_src, arg), ExitStatus.USAGE)
        return Sampler(name, max_rate=rate)
    if name.endswith("traceidratio"):
        return Sampler(name, _ratio(arg, arg_src) if arg else 1.0)
    return Sampler(name)


# --- the C -------------------------------------------------------------------------------------

def _shared():
    """What the core module and the provider modules both declare."""
    return ["#define SP_ST_DROP %#xu" % ST_DROP, "#define SP_ST_OWNER %#xu" % ST_OWNER,
            "struct sp_trace_key { u64 hi; u64 lo; };"]


def core_declarations(sampler: Sampler) -> str:
    """The core module's sampling maps: sp_traces (remembered decisions) and sp_sampling (the adaptive
    bound, slot 0), only where the sampler uses them."""
    out = _shared()
    if sampler.stateful:
        out.append('BPF_TABLE_PUBLIC("lru_hash", struct sp_trace_key, u8, sp_traces, %d);' % TRACE_MAP_SIZE)
    if sampler.name == "adaptive":
        out.append('BPF_TABLE_PUBLIC("array", int, u64, sp_sampling, %d);' % SLOTS)
    return "\n".join(out) + "\n"


def render_sampler(sampler: Sampler) -> str:
    """The provider modules' sampling code: the extern maps and ``sp_sample_start(parent, hi, lo, flags)``,
    the bits (SP_ST_DROP, SP_ST_OWNER) a start keeps in its fail word (``render_decide`` calls it)."""
    hi, lo, parent, flags = "hi", "lo", "parent", "flags"
    out = _shared()
    if sampler.stateful:
        out.append('BPF_TABLE("extern", struct sp_trace_key, u8, sp_traces, %d);' % TRACE_MAP_SIZE)
    if sampler.name == "adaptive":
        out.append('BPF_TABLE("extern", int, u64, sp_sampling, %d);' % SLOTS)
    root = sampler.root
    if root == "always_on":
        rule = "1"
    elif root == "always_off":
        rule = "0"
    elif sampler.name == "adaptive":
        rule = "sp_adaptive_keep(%s)" % lo
        out += ["static __always_inline int sp_adaptive_keep(u64 lo)", "{",
                "    int at = %d;" % SLOT_BOUND, "    u64 *bound = sp_sampling.lookup(&at);",
                "    at = %d;" % SLOT_READ, "    u64 *read = sp_sampling.lookup(&at);",
                "    at = %d;" % SLOT_WRITTEN, "    u64 *written = sp_sampling.lookup(&at);",
                "    if (!bound || !read || !written)", "        return 1;",
                "    /* admission: no new trace while half the ring buffer is unread */",
                "    if ((s64)(*written - *read) >= SP_RINGBUF_BYTES / 2)", "        return 0;",
                "    /* all ones: keep every trace (ratio 1) */",
                "    return *bound == ~0ULL || lo < *bound;", "}",
                "static __always_inline void sp_ring_written(u64 n)", "{",
                "    int at = %d;" % SLOT_WRITTEN, "    u64 *written = sp_sampling.lookup(&at);",
                "    if (written)", "        __sync_fetch_and_add(written, n);", "}"]
    elif sampler.bound >= ID_SPACE:
        rule = "1"
    else:
        rule = "(%s < %dULL)" % (lo, sampler.bound)
    if sampler.parent_based:
        rule = "(%s ? (%s & %d) != 0 : %s)" % (parent, flags, TRACE_FLAG_SAMPLED, rule)
    out += ["static __always_inline u32 sp_sample_start(u64 parent, u64 hi, u64 lo, u64 flags)", "{"]
    if sampler.stateful:
        out += ["    struct sp_trace_key tk = {};", "    tk.hi = %s;" % hi, "    tk.lo = %s;" % lo,
                "    u8 *known = sp_traces.lookup(&tk);",
                "    if (known)", "        return *known ? 0 : SP_ST_DROP;",
                "    u8 keep = %s;" % rule,
                "    u32 owner = sp_traces.insert(&tk, &keep) == 0 ? SP_ST_OWNER : 0;",
                "    return (keep ? 0 : SP_ST_DROP) | owner;"]
    else:
        out += ["    return %s ? 0 : SP_ST_DROP;" % rule]
    out += ["}", ""]
    # An event inside a span goes where its trace goes: the remembered decision, else the rule for a span
    # with a parent (its span); an event outside any span (span id 0) is always kept.
    out += ["static __always_inline u32 sp_sample_event(u64 span, u64 hi, u64 lo, u64 flags)", "{",
            "    u64 parent = span;", "    if (!span)", "        return 0;"]
    if sampler.stateful:
        out += ["    struct sp_trace_key tk = {};", "    tk.hi = hi;", "    tk.lo = lo;",
                "    u8 *known = sp_traces.lookup(&tk);", "    if (known)",
                "        return *known ? 0 : SP_ST_DROP;"]
    out += ["    return %s ? 0 : SP_ST_DROP;" % rule, "}", ""]
    return "\n".join(out)


def render_decide(start: str) -> str:
    """C run at a span's start, once its arguments are in ``start``->w: the decision, into ``fail``."""
    return "    fail |= sp_sample_start(%s);" % ", ".join(
        "%s->w[%d]" % (start, _START[n]) for n in ("parent_span_id", "trace_id_high", "trace_id_low", "flags"))


def render_forget(sampler: Sampler, start: str) -> str:
    """C run at a span's end: the span whose start remembered its trace's decision removes it."""
    if not sampler.stateful:
        return ""
    return ("    if (%s->fail & SP_ST_OWNER) { struct sp_trace_key tk = {}; tk.hi = %s->w[%d]; tk.lo = %s->w[%d]; "
            "sp_traces.delete(&tk); }" % (start, start, _START["trace_id_high"], start, _START["trace_id_low"]))


def render_written(sampler: Sampler, record: str) -> str:
    """C after a record ``record`` is reserved: the adaptive sampler's admission counts its bytes."""
    return "    sp_ring_written(sizeof(*%s));" % record if sampler.name == "adaptive" else ""


class SamplingBound:
    """The adaptive sampler's side of the core module's sp_sampling map: the bound, and the bytes read."""

    def __init__(self, core):
        self._table = core.get_table("sp_sampling")
        self._read = 0

    def set(self, ratio: float) -> None:
        bound = bound_for(ratio)
        self._table[self._table.Key(SLOT_BOUND)] = self._table.Leaf(ID_SPACE - 1 if bound >= ID_SPACE else bound)

    def read(self, nbytes: int) -> None:
        """Userspace took ``nbytes`` of span and point records out of the ring buffer."""
        self._read += nbytes
        self._table[self._table.Key(SLOT_READ)] = self._table.Leaf(self._read)
