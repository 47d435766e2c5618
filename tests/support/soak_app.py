"""The soak's load generator: threads calling span-decorated functions, as fast as they can or paced.

    python -m tests.support.soak_app INDEX --threads N [--rate SPANS_PER_S]

Provider ``soak<INDEX>`` has two spans made by the SDK's public decorator, a
request calling a query (two spans a call). It speaks the generator protocol
of tests.support.load.Gen: its pid first, then ``wait`` (until a tracer listens
to both spans), ``go SECONDS`` (fire; replies how many spans were fired), ``exit``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Optional


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
            while not all(f.__spanprobe_span__.enabled for f in (query, request)):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=int)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rate", type=float, help="total spans/s of this generator (default: flat out)")
    args = parser.parse_args()
    generator(args.index, args.threads, args.rate)


if __name__ == "__main__":
    main()
