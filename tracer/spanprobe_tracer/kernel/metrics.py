"""Span metrics in the kernel: a call count and a duration histogram per (end probe site, status).

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Sequence, Tuple

from spanprobe.abi.protocol import FIXED_ARGS, ROLE_SPAN_END

#: The OpenTelemetry SDK's default explicit bucket boundaries (milliseconds, the spanmetrics unit).
DEFAULT_BOUNDS_MS = (0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
                     10000.0)
#: (cookie, status) series the kernel keeps (each a few hundred bytes per CPU).
MAX_SERIES = 16384
#: Where the end probe's status is among its arguments (docs/abi.md).
STATUS_ARG = [name for name, _ in FIXED_ARGS[ROLE_SPAN_END]].index("status")


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
    """The core module's map, and the structs every module shares."""
    return _structs(nbuckets) + ('BPF_TABLE_PUBLIC("percpu_hash", struct sp_mkey, struct sp_mval, sp_metrics, %d);\n'
                                 % MAX_SERIES)


def _structs(nbuckets: int) -> str:
    return ("struct sp_mkey { u64 cookie; u32 status; u32 pad; };\n"
            "struct sp_mval { u64 count; u64 sum_ns; u64 b[%d]; };\n" % nbuckets)


def render_record(bounds: Sequence[int]) -> str:
    """The provider modules' side: the extern map and ``sp_metric(cookie, status, d)``, which records one span
    of ``d`` ns."""
    nb = len(bounds) + 1
    lines = [_structs(nb), 'BPF_TABLE("extern", struct sp_mkey, struct sp_mval, sp_metrics, %d);' % MAX_SERIES,
             "static __always_inline void sp_metric(u64 cookie, u32 status, u64 d)", "{",
             "    struct sp_mkey mk = {};", "    mk.cookie = cookie;", "    mk.status = status;",
             "    struct sp_mval *m = sp_metrics.lookup(&mk);", "    if (!m) {",
             "        struct sp_mval zero = {};",
             "        sp_metrics.insert(&mk, &zero);  /* fails if another CPU inserted it first: fine */",
             "        m = sp_metrics.lookup(&mk);", "        if (!m) {",
             "            sp_count(SP_CNT_METRICS_MAP_FULL);", "            return;", "        }", "    }",
             "    u32 i = 0;"]
    lines += ["    i += d > %dULL;" % b for b in bounds]
    lines += ["    __sync_fetch_and_add(&m->count, 1);", "    __sync_fetch_and_add(&m->sum_ns, d);",
              "    if (i < %d)" % nb, "        __sync_fetch_and_add(&m->b[i], 1);", "}", ""]
    return "\n".join(lines)


def render_end(status_read: str) -> str:
    """C at a span's end, ``st`` its start, ``now`` the time, ``cookie`` the site's: record it (status first)."""
    return ("    { u64 status = 0; %s sp_metric(cookie, (u32)(status & 0xff), now - st->start_ns); }"
            % status_read)


@dataclass
class Series:
    """One (cookie, status) series, summed over CPUs: cumulative since its first span."""

    cookie: int
    status: int
    count: int
    sum_ns: int
    buckets: List[int]


class MetricsTable:
    """The core module's sp_metrics map, read from userspace."""

    def __init__(self, core):
        self._table = core.get_table("sp_metrics")

    def read(self) -> List[Series]:
        out = []
        for key, per_cpu in self._table.items():
            out.append(Series(key.cookie, key.status, sum(v.count for v in per_cpu), sum(v.sum_ns for v in per_cpu),
                              [sum(col) for col in zip(*(list(v.b) for v in per_cpu))]))
        return out

    def remove(self, cookies: Iterable[int]) -> List[Series]:
        """Take the series of ``cookies`` out of the map (their process is gone); what they held."""
        wanted = set(cookies)
        taken = []
        for series in self.read():
            if series.cookie in wanted:
                taken.append(series)
                key = self._table.Key(series.cookie, series.status, 0)
                try:
                    del self._table[key]
                except KeyError:
                    pass
        return taken

