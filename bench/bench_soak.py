#!/usr/bin/env python3
"""Soak: processes × threads firing spans while traced; peak memory, and books that balance exactly.

    sudo .venv/bin/python -m bench.bench_soak                          # 4 × 4, flat out, 60 s
    sudo .venv/bin/python -m bench.bench_soak --rate 20000 --seconds 50 --outage 10:30
                                          # 20,000 spans/s; the collector is down from 10 s to 40 s

(from the repository root).

Setup, all on this machine:
  * ``--procs`` generator processes (tests/support/soak_app.py), each with its
    own provider and ``--threads`` threads calling a span-decorated function
    that calls another (two spans a call, made by the SDK's public decorator)
    as fast as they can, or at ``--rate`` spans/s in total; each counts the
    spans it fired;
  * the real tracer, `spanprobe trace --pid ... --exporter otlp` (firing
    starts once it holds a BPF link for every probe site: the semaphores
    alone could have been raised by another tool), to
  * a real OTLP/gRPC receiver in this process (tests/support/otlp_receiver.py)
    counting what it decodes. With ``--outage START:SECONDS`` it is stopped
    START seconds in and restarted on the same port SECONDS later.

Reported: spans fired, exported, received by the collector, lost by reason
(from the tracer's --stats-file), the tracer's RSS once attached and its peak
RSS (VmHWM), how long export took to resume after an outage, and how long the
tracer took to stop. The books must balance exactly: fired = exported + lost,
and the collector received what the tracer counted as exported. Exit status
1 if they do not. tests/hardening runs short versions of both scenarios
(the run itself is tests/support/load.py's soak()).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tests.support.load import balanced, describe, soak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=4, help="generator processes (default 4)")
    parser.add_argument("--threads", type=int, default=4, help="threads per process (default 4)")
    parser.add_argument("--seconds", type=float, default=60.0, help="firing time (default 60)")
    parser.add_argument("--rate", type=float, help="total spans/s (default: as fast as they can)")
    parser.add_argument("--outage", metavar="START:SECONDS",
                        help="stop the collector START s in, restart it SECONDS later")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("tracer_args", nargs="*", help="extra `spanprobe trace` arguments (after --)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_soak: needs root (it runs the tracer)", file=sys.stderr)
        return 2
    outage = tuple(float(x) for x in args.outage.split(":")) if args.outage else None
    r = soak(args.procs, args.threads, args.seconds, args.rate, outage, args.tracer_args)
    print(json.dumps(r, indent=2) if args.json else describe(r))
    return 0 if balanced(r) else 1


if __name__ == "__main__":
    sys.exit(main())
