#!/usr/bin/env python3
"""Soak: processes × threads firing spans while traced; peak memory, and books that balance exactly.

    sudo .venv/bin/python bench/bench_soak.py                          # 4 × 4, flat out, 60 s
    sudo .venv/bin/python bench/bench_soak.py --rate 20000 --seconds 50 --outage 10:30
                                          # 20,000 spans/s; the collector is down from 10 s to 40 s

Setup, all on this machine:
  * ``--procs`` generator processes (this file with --generator), each with its
    own provider and ``--threads`` threads calling a span-decorated function
    that calls another (two spans a call, made by the SDK's public decorator)
    as fast as they can, or at ``--rate`` spans/s in total; each counts the
    spans it fired;
  * the real tracer, `spanprobe trace --pid ... --exporter otlp` (firing
    starts once it holds a BPF link for every probe site: the semaphores
    alone could have been raised by another tool), to
  * a real OTLP/gRPC receiver in this process (tests/tracer/otlp_receiver.py)
    counting what it decodes. With ``--outage START:SECONDS`` it is stopped
    START seconds in and restarted on the same port SECONDS later.

Reported: spans fired, exported, received by the collector, lost by reason
(from the tracer's --stats-file), the tracer's RSS once attached and its peak
RSS (VmHWM), how long export took to resume after an outage, and how long the
tracer took to stop. The books must balance exactly: fired = exported + lost,
and the collector received what the tracer counted as exported. Exit status
1 if they do not. tests/hardening runs short versions of both scenarios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from typing import Optional, Sequence, Tuple

import bench_tracer  # this directory; it puts the repository root and tests/tracer on sys.path

SITES_PER_GENERATOR = 4  # two spans, a start and an end probe each


# --- the load generator (this same file, run with --generator) ------------------------

def generator(index: int, threads: int, rate: Optional[float]) -> None:
    import spanprobe

    provider = spanprobe.Provider("soak%d" % index)

    @provider.span("soak.query", kind="client", attributes=("n",))
    def query(n: int) -> int:
        return n

    @provider.span("soak.request", kind="server", attributes=("route", "n"))
    def request(route: str, n: int) -> int:
        return query(n)

    provider.load()
    print(json.dumps({"pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "wait":
            while not all(p.enabled for p in provider.probes.values()):
                time.sleep(0.01)
            print(json.dumps({"enabled": True}), flush=True)
        elif cmd[0] == "go":
            counts = [0] * threads
            stop = time.perf_counter() + float(cmd[1])
            per_thread = rate / threads if rate else None

            def fire(k: int) -> None:
                t0 = time.perf_counter()
                n = 0
                while True:
                    now = time.perf_counter()
                    if now >= stop:
                        break
                    if per_thread and n >= per_thread * (now - t0):
                        time.sleep(0.001)
                        continue
                    request("/soak", n)
                    n += 2  # two spans a call
                counts[k] = n

            workers = [threading.Thread(target=fire, args=(k,)) for k in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            print(json.dumps({"fired": sum(counts)}), flush=True)
        elif cmd[0] == "exit":
            return


# --- the driver ---------------------------------------------------------------------------

def start_generator(index: int, threads: int, rate: Optional[float]) -> bench_tracer.Gen:
    """One generator process (bench_tracer's driver side: send, reply, close)."""
    argv = [sys.executable, __file__, "--generator", str(index), "--threads", str(threads)]
    if rate:
        argv += ["--rate", str(rate)]
    return bench_tracer.Gen(argv)


def memory_kib(pid: int) -> dict:
    """VmRSS and VmHWM (peak RSS) of a process, KiB."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line[:5]] = int(line.split()[1])
    return out


def _sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.monotonic()))


def soak(procs: int = 4, threads: int = 4, seconds: float = 60.0, rate: Optional[float] = None,
         outage: Optional[Tuple[float, float]] = None, tracer_args: Sequence[str] = ()) -> dict:
    """One soak run; returns the numbers (see the module doc). ``outage`` is (start, seconds)."""
    from otlp_receiver import Collector, GrpcReceiver

    class TimedCollector(Collector):
        """Also notes when the first request after the collector came back arrived."""

        up_at = resumed_at = None

        def add(self, request, headers):
            super().add(request, headers)
            if self.up_at is not None and self.resumed_at is None:
                self.resumed_at = time.monotonic()

    collector = TimedCollector(count_only=True)
    receiver = GrpcReceiver(collector, workers=2)
    port = receiver.port
    gens = [start_generator(i, threads, rate / procs if rate else None) for i in range(procs)]
    stats_file = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    tracer, count_at_up = None, 0
    try:
        # Semaphores are raised by any tool attached, so the generators' own "wait" could be
        # satisfied by another tracer; start_tracer waits for the tracer's BPF links, its own.
        tracer = bench_tracer.start_tracer(stats_file, "--exporter", "otlp", "--otlp-endpoint", receiver.endpoint,
                                           "-v", *tracer_args, pids=[g.pid for g in gens],
                                           sites=SITES_PER_GENERATOR * procs)
        for g in gens:
            g.send("wait")
        for g in gens:
            g.reply()
        attached = memory_kib(tracer.pid)["VmRSS"]
        t0 = time.monotonic()
        for g in gens:
            g.send("go %f" % seconds)
        # An outage (or its end) due at or after the end of firing does not happen; the replies
        # below come once the generators have fired for ``seconds``.
        if outage and outage[0] < seconds:
            _sleep_until(t0 + outage[0])
            receiver.stop()
            if outage[0] + outage[1] < seconds:
                _sleep_until(t0 + outage[0] + outage[1])
                receiver = GrpcReceiver(collector, port=port, workers=2)
                collector.up_at, count_at_up = time.monotonic(), collector.count
        fired = sum(g.reply()["fired"] for g in gens)
        fire_s = time.monotonic() - t0
        bench_tracer.settle(collector, fired, limit_s=60.0, quiet_s=2.0)
        peak = memory_kib(tracer.pid)["VmHWM"]
        t_stop = time.monotonic()
        err, stats = bench_tracer.stop_tracer(tracer, stats_file)
        stop_s = time.monotonic() - t_stop
    finally:
        bench_tracer.clean_up(tracer, gens, receiver, stats_file)
    return {
        "procs": procs, "threads": threads, "seconds": seconds, "rate": rate, "outage": outage,
        "fired": fired, "fired_per_s": fired / fire_s, "exported": stats["exported"],
        "received": collector.count, "lost": stats["lost"], "lost_by_reason": bench_tracer.lost_by_reason(stats),
        "open_at_exit": stats["open_at_exit"], "end_without_start": stats["kernel"]["end_without_start"],
        "unaccounted": fired - stats["exported"] - stats["lost"] - stats["open_at_exit"],
        "rss_after_attach_mib": attached / 1024, "peak_rss_mib": peak / 1024,
        "resume_s": collector.resumed_at - collector.up_at if collector.resumed_at else None,
        "received_after_outage": collector.count - count_at_up if outage else 0, "stop_s": stop_s,
        "tracer_log": [line for line in err.strip().splitlines() if " spans/s, " not in line],
    }


def balanced(r: dict) -> bool:
    return r["unaccounted"] == 0 and r["received"] == r["exported"]


def describe(r: dict) -> str:
    lines = [
        "%d procs x %d threads, %.0f s%s%s: fired %d (%.0f spans/s), exported %d, collector received %d"
        % (r["procs"], r["threads"], r["seconds"], ", rate %.0f/s" % r["rate"] if r["rate"] else ", flat out",
           ", collector down %.0f s from %.0f s" % (r["outage"][1], r["outage"][0]) if r["outage"] else "",
           r["fired"], r["fired_per_s"], r["exported"], r["received"]),
        "  lost %d %s; still open at exit %d; unaccounted %d -> %s"
        % (r["lost"], {k: v for k, v in r["lost_by_reason"].items() if v}, r["open_at_exit"], r["unaccounted"],
           "BALANCED" if balanced(r) else "UNBALANCED"),
        "  tracer RSS %.0f MiB once attached, peak %.0f MiB; stopped in %.1f s"
        % (r["rss_after_attach_mib"], r["peak_rss_mib"], r["stop_s"]),
    ]
    if not balanced(r):
        lines += ["  the tracer's log:"] + ["    " + line for line in r["tracer_log"]]
    if r["outage"]:
        lines.append("  export resumed %s after the collector came back; %d spans received since"
                     % ("%.1f s" % r["resume_s"] if r["resume_s"] is not None else "NEVER",
                        r["received_after_outage"]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--procs", type=int, default=4, help="generator processes (default 4)")
    parser.add_argument("--threads", type=int, default=4, help="threads per process (default 4)")
    parser.add_argument("--seconds", type=float, default=60.0, help="firing time (default 60)")
    parser.add_argument("--rate", type=float, help="total spans/s (default: as fast as they can)")
    parser.add_argument("--outage", metavar="START:SECONDS",
                        help="stop the collector START s in, restart it SECONDS later")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("tracer_args", nargs="*", help="extra `spanprobe trace` arguments (after --)")
    args = parser.parse_args()
    if args.generator is not None:
        generator(args.generator, args.threads, args.rate)
        return 0
    if os.geteuid() != 0:
        print("bench_soak: needs root (it runs the tracer)", file=sys.stderr)
        return 2
    outage = tuple(float(x) for x in args.outage.split(":")) if args.outage else None
    r = soak(args.procs, args.threads, args.seconds, args.rate, outage, args.tracer_args)
    print(json.dumps(r, indent=2) if args.json else describe(r))
    return 0 if balanced(r) else 1


if __name__ == "__main__":
    sys.exit(main())
