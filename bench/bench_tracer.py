#!/usr/bin/env python3
"""Tracer throughput benchmark: how many spans/s reach an OTLP/gRPC collector (or JSON lines), at what
CPU per span, and is every loss counted?

    sudo .venv/bin/python -m bench.bench_tracer                    # default rate ladder, OTLP and JSONL
    sudo .venv/bin/python -m bench.bench_tracer --rates 100000 --seconds 10 --exporters otlp

(from the repository root: it imports tests.support, as bench/'s other scripts do).

Setup, all on this machine:
  * load generators: ``--procs`` processes, each with its own spanprobe provider
    (a span with two start attributes and one end attribute, the shape of a
    small HTTP handler span), firing spans at a paced total rate;
  * the real tracer (`spanprobe trace --pid ... --exporter otlp`) exporting
    OTLP/gRPC to
  * a real OTLP/gRPC receiver (tests/support/otlp_receiver.py) in this process
    that counts the spans it decodes; or, with ``--exporter jsonl``, to a pipe
    whose lines this process counts.

For each rate and exporter it reports spans fired, received by the collector,
exported per second, the tracer's own CPU time (user + system of all its
threads, /proc/PID/stat, from the first span fired until the receiver has
what it will get) per span received, and the tracer's loss accounting by
reason, and checks that the
books balance: fired == exported + counted losses (+ spans still open when
the generators stopped, which the tracer reports as such). A run where spans
vanish without being counted fails (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

from tests.support.load import Gen, clean_up, lost_by_reason, settle, start_tracer, stop_tracer
from tests.support.otlp_receiver import Collector, GrpcReceiver

SITES_PER_GENERATOR = 2  # the span's start and end probes

# --- the load generator (this same module, run with --generator) -----------------------

def generator(index: int) -> None:
    from spanprobe import Arg, ArgType as T, Provider
    from spanprobe.abi.protocol import END_ARGS, START_ARGS
    p = Provider("bench%d" % index)
    start = p.declare("req_start", [*START_ARGS, Arg("http.route", T.STR), Arg("user.id", T.I64)], "span_start")
    end = p.declare("req_end", [*END_ARGS, Arg("http.response.status_code", T.I32)], "span_end")
    p.add_schema_span({"name": "GET /bench", "kind": "server", "start": "req_start", "end": "req_end"})
    p.load()
    print(json.dumps({"pid": os.getpid()}), flush=True)
    fire_start, fire_end = start.fire, end.fire
    base = (os.getpid() << 40) | 1
    trace_hi = int.from_bytes(os.urandom(8), "little") | 1
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "wait":
            while not (start.enabled and end.enabled):
                time.sleep(0.01)
            print(json.dumps({"enabled": True}), flush=True)
        elif cmd[0] == "go":
            rate, seconds = float(cmd[1]), float(cmd[2])
            done = 0
            t0 = time.perf_counter()
            stop = t0 + seconds
            while True:
                now = time.perf_counter()
                if now >= stop:
                    break
                due = int(rate * (now - t0)) - done
                for _ in range(min(due, 2000)):
                    sid = base + done
                    fire_start(sid, 0, trace_hi, sid, 1, "/bench", done)
                    fire_end(sid, 0, "", "", 1, 200)
                    done += 1
                if due <= 0:
                    time.sleep(0.0005)
            print(json.dumps({"fired": done, "seconds": time.perf_counter() - t0}), flush=True)
        elif cmd[0] == "exit":
            return


# --- the driver ---------------------------------------------------------------------------

class LineReceiver:
    """The JSON-lines "collector": a pipe the tracer writes its --output to (opened by it as
    /proc/BENCH/fd/N), whose lines a thread counts, so the output is checked, not stored."""

    def __init__(self):
        self._read, self._write = os.pipe()
        self.output = "/proc/%d/fd/%d" % (os.getpid(), self._write)
        self.collector = self   # settle() and the report read .count, as of a Collector
        self.count = 0
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                return
            self.count += chunk.count(b"\n")

    def opened(self) -> None:
        """The tracer has its own end open: let EOF come when it exits."""
        os.close(self._write)

    def stop(self) -> None:
        self._thread.join(5)
        os.close(self._read)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid``, all its threads, so far (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_rate(rate: float, seconds: float, procs: int, exporter: str, extra_args) -> dict:
    if exporter == "otlp":
        receiver = GrpcReceiver(Collector(count_only=True), workers=2)
        export_args = ["--exporter", "otlp", "--otlp-endpoint", receiver.endpoint]
    else:
        receiver = LineReceiver()
        export_args = ["--exporter", "jsonl", "--output", receiver.output]
    gens = [Gen([sys.executable, "-m", "bench.bench_tracer", "--generator", str(i)]) for i in range(procs)]
    stats_file = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    tracer = None
    try:
        tracer = start_tracer(stats_file, *export_args, *extra_args,
                              pids=[g.pid for g in gens], sites=SITES_PER_GENERATOR * procs)
        if exporter != "otlp":
            receiver.opened()
        for g in gens:
            g.send("wait")
        for g in gens:
            g.reply()
        before = receiver.collector.count
        cpu0 = cpu_seconds(tracer.pid)
        t0 = time.monotonic()
        for g in gens:
            g.send("go %f %f" % (rate / procs, seconds))
        fired = sum(g.reply()["fired"] for g in gens)
        fire_s = time.monotonic() - t0
        # Let the tracer catch up (bounded), then stop it: SIGINT flushes.
        settle(receiver.collector, before + fired, limit_s=30)
        caught_up_s = time.monotonic() - t0
        cpu = cpu_seconds(tracer.pid) - cpu0
        exported_by_then = receiver.collector.count - before
        load = os.getloadavg()[0]
        err, stats = stop_tracer(tracer, stats_file)
    finally:
        clean_up(tracer, gens, receiver, stats_file)
    received = receiver.collector.count - before
    k = stats["kernel"]
    lost = stats["lost"]
    open_at_stop = stats["unmatched_exited"] + stats["unmatched_expired"]
    unaccounted = fired - stats["exported"] - lost - stats["sampled_out"] - k["end_without_start"]
    return {
        "exporter": exporter, "rate": rate, "fired": fired, "fire_s": fire_s, "received": received,
        "tracer_cpu_s": cpu, "cpu_us_per_span": cpu / max(exported_by_then, 1) * 1e6, "load_average": load,
        "exported": stats["exported"], "exported_per_s": stats["exported"] / max(caught_up_s, fire_s),
        "lost": lost, "lost_by_reason": lost_by_reason(stats), "rescued": k["rescued"],
        "sampled_out": stats["sampled_out"],
        "end_without_start": k["end_without_start"], "open_at_stop": open_at_stop,
        "unaccounted": unaccounted, "collector_matches_exported": received == stats["exported"],
        "stderr_tail": err.strip().splitlines()[-3:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rates", default="10000,30000,60000,100000",
                        help="comma-separated total spans/s to try")
    parser.add_argument("--seconds", type=float, default=10.0, help="firing time per rate")
    parser.add_argument("--procs", type=int, default=4, help="load generator processes")
    parser.add_argument("--exporters", default="otlp,jsonl",
                        help="comma-separated: otlp (to a real OTLP/gRPC receiver), jsonl (to a pipe)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("tracer_args", nargs="*", help="extra `spanprobe trace` arguments (after --)")
    args = parser.parse_args()
    if args.generator is not None:
        generator(args.generator)
        return 0
    if os.geteuid() != 0:
        print("bench_tracer: needs root (it runs the tracer)", file=sys.stderr)
        return 2
    results = []
    ok = True
    for rate in [float(r) for r in args.rates.split(",")]:
        for exporter in args.exporters.split(","):
            r = run_rate(rate, args.seconds, args.procs, exporter, args.tracer_args)
            results.append(r)
            balanced = r["unaccounted"] == 0 and r["collector_matches_exported"]
            ok = ok and balanced
            if not args.json:
                print("%-5s target %7.0f/s: fired %7d (%.0f/s)  exported %7d (%.0f/s)  lost %6d %s  rescued %d  "
                      "sampled out %d  ends-without-start %d  unaccounted %d  tracer CPU %.2f s = %.2f µs/span  "
                      "load %.1f  %s"
                      % (exporter, rate, r["fired"], r["fired"] / r["fire_s"], r["exported"], r["exported_per_s"],
                         r["lost"], {k: v for k, v in r["lost_by_reason"].items() if v}, r["rescued"],
                         r["sampled_out"],
                         r["end_without_start"], r["unaccounted"], r["tracer_cpu_s"], r["cpu_us_per_span"],
                         r["load_average"], "OK" if balanced else "UNBALANCED"),
                      flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
