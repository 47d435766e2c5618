"""What spanprobe's BPF handlers cost per span in the kernel, for bench_decorators' traced span.

    sudo .venv/bin/python -m bench.bench_onehit_handler [--rounds 9] [--spans 5000] [--paired-spans]

With ``kernel.bpf_stats_enabled`` on (set for the run, restored after), the
kernel adds up each BPF program's run time; ``spanprobe trace --pid`` is
attached to this process (the one-hit span probe by default, the start and end
probes with --paired-spans) and each round fires SPANS spans of
bench_decorators' decorated function (a root span, a str and a u16
attribute). A round's figure is the tracer's programs' run time over the spans
fired (bench_sampling.prog_stats), and the program runs a span. The rounds
share one tracer; their spread is the machine's. Compare builds by alternating
runs of this command under the benchmark lock.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

from bench.bench_decorators import handle_functions, spanprobe_tracer_on
from bench.bench_sampling import STATS_SWITCH, prog_stats
from tests.support.load import stop_tracer

#: Between rounds: the tracer empties the ring buffer (a full one would make its handlers' drops look cheap).
DRAIN_S = 1.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--spans", type=int, default=5000,
                    help="spans fired a round, in a burst the ring buffer holds (the tracer drains it between rounds)")
    ap.add_argument("--paired-spans", action="store_true", help="the tracer on the start and end probes")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_onehit_handler: needs root (it runs the tracer)", file=sys.stderr)
        return 2
    _, decorated, provider = handle_functions("bench_handler")
    with open(STATS_SWITCH) as f:
        was = f.read().strip()
    per_span, runs, stats = [], [], {}
    try:
        with open(STATS_SWITCH, "w") as f:
            f.write("1")
        with tempfile.TemporaryDirectory() as tmp:
            stats_file = os.path.join(tmp, "stats.json")
            args = ("--paired-spans",) if opts.paired_spans else ()
            tracer = spanprobe_tracer_on(stats_file, *args, sites=2 if opts.paired_spans else 1)
            if tracer is None:
                return 1
            try:
                for _ in range(opts.rounds):
                    ns0, cnt0 = prog_stats(tracer.pid)
                    for _ in range(opts.spans):
                        decorated("GET", 200)
                    ns1, cnt1 = prog_stats(tracer.pid)
                    per_span.append((ns1 - ns0) / opts.spans)
                    runs.append((cnt1 - cnt0) / opts.spans)
                    time.sleep(DRAIN_S)
            finally:
                _, stats = stop_tracer(tracer, stats_file)
    finally:
        with open(STATS_SWITCH, "w") as f:
            f.write(was)
        provider.unload()
    print("BPF handler ns a span (%s), %d rounds of %d spans: best %.0f, median %.0f, max %.0f; "
          "%.2f-%.2f program runs a span" % ("start + end" if opts.paired_spans else "one hit", opts.rounds,
                                             opts.spans, min(per_span), statistics.median(per_span), max(per_span),
                                             min(runs), max(runs)))
    print("rounds: " + " ".join("%.0f" % v for v in per_span))
    exported, fired = stats.get("exported", 0), opts.rounds * opts.spans
    print("spans fired %d, exported %d, lost %d" % (fired, exported, stats.get("lost", 0)))
    if stats.get("lost") or exported != fired:  # a span the handler did not finish would make ns a span look lower
        print("bench_onehit_handler: not every span was exported; the numbers above are not a span's cost",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
