"""Span metrics in the kernel: a call count and a duration histogram per (end probe site, status), and HTTP.

Every span end that finds its start is counted here *first*, before the
sampling decision, the duration threshold and the ring-buffer reservation, so
the counts are every span that ended, sampled out or lost alike. The key is the
end probe's attachment cookie (which span type, of which provider, in which
process: decode.Bindings knows) and the end probe's ``status``; the value, in
the core module's per-CPU hash sp_metrics, is the count, the sum of durations
(ns) and one counter per histogram bucket. Bucket i counts durations in
(bound[i-1], bound[i]] like OpenTelemetry's explicit-bucket histogram; the
bounds are compiled in as nanoseconds (``render_record``: one comparison per
bound, no loop). A full map drops the observation and counts it
(Counter.METRICS_MAP_FULL); ``MetricsTable.read`` sums the CPUs.

HTTP server spans (``http_fields``) are also counted in sp_http by the hashes
of their method and route strings and their status code, in seconds with the
semantic conventions' bounds; each string goes to userspace once, in a name
record (``_render_http``), so the counts never wait for sampling to keep a span.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

from spanprobe.abi.protocol import FIXED_ARGS, ROLE_SPAN_END

#: The OpenTelemetry SDK's default explicit bucket boundaries (milliseconds, the spanmetrics unit).
DEFAULT_BOUNDS_MS = (0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
                     10000.0)
#: (cookie, status) series the kernel keeps (each a few hundred bytes per CPU).
MAX_SERIES = 16384
#: Where the end probe's status is among its arguments (docs/abi.md).
STATUS_ARG = [name for name, _ in FIXED_ARGS[ROLE_SPAN_END]].index("status")


#: The attributes an HTTP server span feeds http.server.request.duration with (semantic conventions).
HTTP_METHOD, HTTP_ROUTE, HTTP_STATUS = "http.request.method", "http.route", "http.response.status_code"
#: http.server.request.duration's advisory bucket bounds (seconds, semantic conventions).
HTTP_BOUNDS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: (cookie, method, route, status) series of HTTP server spans the kernel keeps.
MAX_HTTP_SERIES = 16384
#: Strings (methods, routes) whose names userspace has been sent, by hash.
MAX_NAMES = 65536
_INTEGER = ("i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64")


class HttpFields(NamedTuple):
    """Where an HTTP server span's attributes are: argument positions in its start probe (method, route; -1
    for none) and its end probe (status code; -1 for none)."""

    method: int
    route: int
    status: int


def http_fields(kind: str, start_args: Sequence[Tuple[str, str]], end_args: Sequence[Tuple[str, str]]
                ) -> Optional[HttpFields]:
    """A server span whose start probe has a str ``http.request.method`` feeds http.server.request.duration,
    by ``http.route`` (str, start) and ``http.response.status_code`` (an integer, end) where it has them."""
    def find(args, name, types):
        return next((i for i, (n, t) in enumerate(args) if n == name and t in types), -1)

    method = find(start_args, HTTP_METHOD, ("str",))
    if kind != "server" or method < 0:
        return None
    return HttpFields(method, find(start_args, HTTP_ROUTE, ("str",)), find(end_args, HTTP_STATUS, _INTEGER))


def bounds_ns(bounds_ms: Sequence[float]) -> Tuple[int, ...]:
    """Bucket bounds in milliseconds -> the kernel's nanoseconds (a duration d ns is in a bucket bounded by
    b ms when d <= b * 1e6, which is exact for bounds with at most six decimals)."""
    return tuple(round(b * 1_000_000) for b in bounds_ms)


def parse_bounds(text: str, where: str) -> Tuple[float, ...]:
    """'1,5,10' (milliseconds, increasing) -> bounds; ValueError naming ``where`` otherwise."""
    try:
        bounds = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError("%s %r: bucket bounds are comma-separated milliseconds (e.g. 1,5,10,50)" % (where, text))
    if not bounds or any(b < 0 for b in bounds) or any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise ValueError("%s %r: give at least one bound, none negative, strictly increasing" % (where, text))
    if len(bounds) > 64:
        raise ValueError("%s: at most 64 bucket bounds, got %d" % (where, len(bounds)))
    return bounds


def core_declarations(nbuckets: int) -> str:
    """The core module's maps, and the structs every module shares."""
    return _structs(nbuckets) + (
        'BPF_TABLE_PUBLIC("percpu_hash", struct sp_mkey, struct sp_mval, sp_metrics, %d);\n'
        'BPF_TABLE_PUBLIC("percpu_hash", struct sp_hkey, struct sp_hval, sp_http, %d);\n'
        'BPF_TABLE_PUBLIC("hash", u64, u8, sp_names, %d);\n' % (MAX_SERIES, MAX_HTTP_SERIES, MAX_NAMES))


def _structs(nbuckets: int) -> str:
    return ("struct sp_mkey { u64 cookie; u32 status; u32 pad; };\n"
            "struct sp_mval { u64 count; u64 sum_ns; u64 b[%d]; };\n"
            "struct sp_hkey { u64 cookie; u64 method; u64 route; s64 status; };\n"
            "struct sp_hval { u64 count; u64 sum_ns; u64 b[%d]; };\n" % (nbuckets, len(HTTP_BOUNDS_S) + 1))


def _bucket(bounds: Sequence[int], value: str) -> List[str]:
    """C: ``i`` = the bucket of ``value`` ns among ``bounds`` (one comparison a bound, no loop)."""
    return ["    u32 i = 0;"] + ["    i += %s > %dULL;" % (value, b) for b in bounds]


def render_record(bounds: Sequence[int], name_text_at: int) -> str:
    """The provider modules' side: the extern maps, ``sp_metric(cookie, status, d)``, which records one span
    of ``d`` ns, and sp_http_metric() (``_render_http``); name records keep their text at ``name_text_at``."""
    nb = len(bounds) + 1
    lines = [_structs(nb), 'BPF_TABLE("extern", struct sp_mkey, struct sp_mval, sp_metrics, %d);' % MAX_SERIES,
             'BPF_TABLE("extern", struct sp_hkey, struct sp_hval, sp_http, %d);' % MAX_HTTP_SERIES,
             'BPF_TABLE("extern", u64, u8, sp_names, %d);' % MAX_NAMES,
             "static __always_inline void sp_metric(u64 cookie, u32 status, u64 d)", "{",
             "    struct sp_mkey mk = {};", "    mk.cookie = cookie;", "    mk.status = status;",
             "    struct sp_mval *m = sp_metrics.lookup(&mk);", "    if (!m) {",
             "        struct sp_mval zero = {};",
             "        sp_metrics.insert(&mk, &zero);  /* fails if another CPU inserted it first: fine */",
             "        m = sp_metrics.lookup(&mk);", "        if (!m) {",
             "            sp_count(SP_CNT_METRICS_MAP_FULL);", "            return;", "        }", "    }",
             ]
    lines += _bucket(bounds, "d")
    lines += ["    __sync_fetch_and_add(&m->count, 1);", "    __sync_fetch_and_add(&m->sum_ns, d);",
              "    if (i < %d)" % nb, "        __sync_fetch_and_add(&m->b[i], 1);", "}", ""]
    return "\n".join(lines) + _render_http(name_text_at)


def _render_http(text_at: int) -> str:
    """sp_http_metric(ctx, cookie, method, route, status, d): one HTTP server span of ``d`` ns, by the hashes of
    its method and route strings (FNV-1a 64, their captured slots) and its status code. A string whose hash
    userspace has not been sent yet goes out first in a name record (SP_KIND_NAME), until one is delivered:
    counts are exact at once, names follow as soon as the ring buffer has room."""
    nb = len(HTTP_BOUNDS_S) + 1
    lines = ["struct sp_name_rec { struct sp_hdr h; u64 hash; char s[SP_STR_MAX + 2]; };",
             "_Static_assert(__builtin_offsetof(struct sp_name_rec, s) == %d, \"sp_name_rec.s\");" % text_at,
             "static __always_inline u64 sp_fnv(const char *s)", "{",
             "    u64 h = 0xcbf29ce484222325ULL;",
             "    for (int j = 0; j < SP_STR_MAX + 2; j++) {", "        u8 c = s[j];", "        if (!c)",
             "            break;", "        h = (h ^ c) * 0x100000001b3ULL;", "    }", "    return h;", "}",
             "static __always_inline void sp_name(struct pt_regs *ctx, u64 h, const char *s)", "{",
             "    if (sp_names.lookup(&h))", "        return;",
             "    struct sp_name_rec *r = sp_reserve(sizeof(struct sp_name_rec), SP_CNT_NAME_RB_FULL, "
             "SP_CNT_NAME_RB_FULL);",
             "    if (!r)", "        return;",
             "    r->h.kind = SP_KIND_NAME;", "    r->h.shape = 0;", "    r->h.program = SP_PROGRAM;",
             "    u64 pid_tgid = bpf_get_current_pid_tgid();", "    r->h.pid = pid_tgid >> 32;",
             "    r->h.tid = (u32)pid_tgid;", "    r->h.cookie = 0;", "    r->hash = h;",
             "    bpf_probe_read_kernel(r->s, sizeof(r->s), s);",
             "    sp_events.ringbuf_submit(r, BPF_RB_NO_WAKEUP);", "    u8 one = 1;", "    sp_names.update(&h, &one);", "}",
             "static __always_inline void sp_http_metric(struct pt_regs *ctx, u64 cookie, const char *method,",
             "                                           const char *route, s64 status, u64 d)", "{",
             "    struct sp_hkey hk = {};", "    hk.cookie = cookie;", "    hk.method = sp_fnv(method);",
             "    hk.route = route ? sp_fnv(route) : 0;", "    hk.status = status;",
             "    sp_name(ctx, hk.method, method);", "    if (route)", "        sp_name(ctx, hk.route, route);",
             "    struct sp_hval *m = sp_http.lookup(&hk);", "    if (!m) {", "        struct sp_hval zero = {};",
             "        sp_http.insert(&hk, &zero);", "        m = sp_http.lookup(&hk);", "        if (!m) {",
             "            sp_count(SP_CNT_METRICS_MAP_FULL);", "            return;", "        }", "    }"]
    lines += _bucket(bounds_ns([b * 1000 for b in HTTP_BOUNDS_S]), "d")
    lines += ["    __sync_fetch_and_add(&m->count, 1);", "    __sync_fetch_and_add(&m->sum_ns, d);",
              "    if (i < %d)" % nb, "        __sync_fetch_and_add(&m->b[i], 1);", "}", ""]
    return "\n".join(lines)


def render_http_end(http: HttpFields, method_slot: str, route_slot: Optional[str], status_read: str) -> str:
    """C at an HTTP server span's end (``st`` its start, ``cookie`` the site's): its http.server.request.duration."""
    return ("    { s64 hstatus = %s; %s sp_http_metric(ctx, cookie, %s, %s, hstatus, now - st->start_ns); }"
            % ("0" if http.status < 0 else "-1", status_read, method_slot, route_slot or "0"))


def render_end(status_read: str) -> str:
    """C at a span's end, ``st`` its start, ``now`` the time, ``cookie`` the site's: record it (status first)."""
    return ("    { u64 status = 0; %s sp_metric(cookie, (u32)(status & 0xff), now - st->start_ns); }"
            % status_read)


@dataclass
class Series:
    """One series, summed over CPUs, cumulative since its first span: (cookie, status) in sp_metrics; in sp_http
    also the hashes of the method and route (``method``, ``route``), ``status`` the status code."""

    cookie: int
    status: int
    count: int
    sum_ns: int
    buckets: List[int]
    method: int = 0
    route: int = 0


class MetricsTable:
    """The core module's span metrics maps (sp_metrics, sp_http), read from userspace."""

    def __init__(self, core):
        self._spans = core.get_table("sp_metrics")
        self._http = core.get_table("sp_http")

    @staticmethod
    def _series(key, per_cpu, http: bool) -> Series:
        out = Series(key.cookie, key.status, sum(v.count for v in per_cpu), sum(v.sum_ns for v in per_cpu),
                     [sum(col) for col in zip(*(list(v.b) for v in per_cpu))])
        if http:
            out.method, out.route = key.method, key.route
        return out

    def read(self) -> List[Series]:
        """Every span series (sp_metrics)."""
        return [self._series(k, v, False) for k, v in self._spans.items()]

    def read_http(self) -> List[Series]:
        """Every HTTP server series (sp_http)."""
        return [self._series(k, v, True) for k, v in self._http.items()]

    def remove(self, cookies: Iterable[int]) -> Tuple[List[Series], List[Series]]:
        """Take the series of ``cookies`` out of both maps (their process is gone); what they held."""
        wanted = set(cookies)
        taken = ([], [])
        for table, out, http in ((self._spans, taken[0], False), (self._http, taken[1], True)):
            for key, per_cpu in table.items():
                if key.cookie in wanted:
                    out.append(self._series(key, per_cpu, http))
                    try:
                        del table[key]
                    except KeyError:
                        pass
        return taken
