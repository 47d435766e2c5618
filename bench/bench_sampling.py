"""What sampling and span metrics cost in the BPF handlers, per span, against the plain handlers in the same run.

    sudo .venv/bin/python -m bench.bench_sampling [--rounds 3] [--traces 5000]     # from the repository root

With ``kernel.bpf_stats_enabled`` on (set for the run, restored after), the
kernel adds up each BPF program's run time; the tracer's programs are found
through its file descriptors (/proc/PID/fdinfo: run_time_ns, run_cnt). Each
configuration traces one tracee (tests/support/tracee.py) firing TRACES traces
of three spans and one event each; the row is the handlers' total run time over
the spans fired (start + end handlers, and the event's share), best and
spread over the rounds, rounds interleaving the configurations, and the ratio
to the first row (always_on, no metrics: the handlers as they were before
sampling and metrics). Sampled-out spans skip the ring-buffer copy, so a low
ratio can cost *less* than keeping everything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

from tests.support.bpf_maps import fdinfos
from tests.support.tracer_helpers import SITES, Tracee, jsonl_tracer, wait_attached

CONFIGS = [
    ("always_on, no metrics", ["--sampler", "always_on", "--metrics-exporter", "none"]),
    ("always_on + metrics", ["--sampler", "always_on", "--metrics-exporter", "console"]),
    ("parentbased_always_on (default)", ["--metrics-exporter", "none"]),
    ("traceidratio 0.1", ["--sampler", "traceidratio", "--sampler-arg", "0.1", "--metrics-exporter", "none"]),
    ("traceidratio 0.1 + metrics", ["--sampler", "traceidratio", "--sampler-arg", "0.1",
                                    "--metrics-exporter", "console"]),
    ("parentbased_traceidratio 0.1", ["--sampler", "parentbased_traceidratio", "--sampler-arg", "0.1",
                                      "--metrics-exporter", "none"]),
    ("adaptive + metrics", ["--sampler", "adaptive", "--metrics-exporter", "console"]),
]
STATS_SWITCH = "/proc/sys/kernel/bpf_stats_enabled"


def prog_stats(pid: int):
    """(run_time_ns, run_cnt) summed over the BPF programs process ``pid`` holds."""
    total_ns = total_cnt = 0
    for _, info in fdinfos(pid, "prog"):
        total_ns += int(info.get("run_time_ns", "0"))
        total_cnt += int(info.get("run_cnt", "0"))
    return total_ns, total_cnt


def one(args, traces: int, tmp: str):
    """ns of BPF handler time per span fired, and program runs per span, for one configuration."""
    tracee = Tracee()
    tracer = None
    try:
        tracee.send("load shop")
        tracer = jsonl_tracer(os.path.join(tmp, "spans.jsonl"), os.path.join(tmp, "stats.json"),
                              "--pid", str(tracee.pid), *args)
        wait_attached(tracer, SITES)
        ns0, cnt0 = prog_stats(tracer.proc.pid)
        spans = tracee.send("spans shop %d" % traces, timeout=300)["spans"]
        ns1, cnt1 = prog_stats(tracer.proc.pid)
        tracer.stop()
    finally:
        if tracer is not None:
            tracer.kill()
        tracee.close()
    return (ns1 - ns0) / spans, (cnt1 - cnt0) / spans


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--traces", type=int, default=5000, help="traces per configuration and round (3 spans each)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_sampling: needs root (it runs the tracer)", file=sys.stderr)
        return 2
    with open(STATS_SWITCH) as f:
        was = f.read().strip()
    results = {name: [] for name, _ in CONFIGS}
    runs = {}
    try:
        with open(STATS_SWITCH, "w") as f:
            f.write("1")
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                for name, extra in CONFIGS:
                    ns, cnt = one(extra, args.traces, tmp)
                    results[name].append(ns)
                    runs[name] = cnt
                    print("round %d  %-34s %7.0f ns/span" % (r + 1, name, ns), file=sys.stderr, flush=True)
    finally:
        with open(STATS_SWITCH, "w") as f:
            f.write(was)
    base = min(results[CONFIGS[0][0]])
    print("BPF handler time per span fired (start + end handlers, the event's share), %d traces x 3 spans, "
          "%d rounds" % (args.traces, args.rounds))
    print("%-34s %9s %9s %9s %7s %9s" % ("configuration", "best ns", "median", "max", "ratio", "runs/span"))
    for name, _ in CONFIGS:
        v = results[name]
        print("%-34s %9.0f %9.0f %9.0f %7.2f %9.2f" % (name, min(v), statistics.median(v), max(v), min(v) / base,
                                                       runs[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
