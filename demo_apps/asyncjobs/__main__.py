"""Run batches of concurrent asyncio jobs with spanprobe spans.

    python -m demo_apps.asyncjobs [--jobs N] [--seed S] [--loop]

Runs one batch and prints a one-line summary. With --loop, runs a batch
every second (seeds S, S+1, ...), a summary line each, until SIGINT or
SIGTERM; the batch in progress finishes first. The same seed always gives
the same jobs, failures, cancellation and summary.
"""

import asyncio
import signal
import sys

from .. import cli
from . import probes
from .jobs import run_batch
from .plan import make_plan

PAUSE = 1.0


def parse_args(argv=None):
    parser = cli.parser("demo_apps.asyncjobs", __doc__)
    parser.add_argument("--jobs", type=cli.int_in(1), default=8, help="jobs per batch (default 8)")
    parser.add_argument("--seed", type=int, default=1, help="what the jobs do (default 1)")
    parser.add_argument("--loop", action="store_true", help="run batches until SIGINT or SIGTERM")
    return parser.parse_args(argv)


async def run(args):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    seed = args.seed
    while True:
        summary = await run_batch(make_plan(args.jobs, seed), seed)
        print(summary.line(seed), flush=True)
        if not args.loop:
            return
        try:
            await asyncio.wait_for(stop.wait(), PAUSE)
            return
        except asyncio.TimeoutError:
            seed += 1


def main(argv=None):
    args = parse_args(argv)
    with probes.provider:
        asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
