"""The tracer under load: generator processes, the tracer started and stopped around them, the soak.

What bench/ and tests/hardening share: bench/bench_tracer.py and
bench/bench_soak.py are command lines around these, and the hardening tests
(test_load, test_faults) run short versions of the same scenarios.

A generator is a process speaking a small protocol (Gen): its pid as the
first JSON line, then one JSON reply per command line ("wait" until its
probes are enabled, "go ..." to fire, "exit"). tests.support.soak_app is the
soak's generator; bench_tracer has its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Iterable, Optional, Sequence, Tuple

from tests.support import await_sites, child_env
from tests.support.otlp_receiver import Collector, GrpcReceiver
from tests.support.tracer_helpers import spanprobe_cmd

#: Probe sites of one soak generator: two spans, traced by their one-hit span probes.
SOAK_SITES_PER_GENERATOR = 2


class Gen:
    """One generator process, ``argv`` (a command speaking the generator protocol: its pid first,
    then a JSON reply to each command line). It can import spanprobe and tests.support."""

    def __init__(self, argv: Sequence[str]):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     env=child_env())
        self.pid = self.reply()["pid"]

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def reply(self) -> dict:
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        try:
            self.send("exit")
            self.proc.wait(5)
        except Exception:
            self.proc.kill()


def start_tracer(stats_file: str, *args: str, pids: Iterable[int] = (), sites: int = 0) -> subprocess.Popen:
    """`spanprobe trace --pid PID... --stats-file STATS_FILE ARGS` (stdout to /dev/null, stderr
    piped), returned once it holds BPF links on ``sites`` probe sites: its own, where semaphores
    could have been raised by another tool. If it exits or does not attach, it is killed and
    await_sites' RuntimeError raised."""
    cmd = spanprobe_cmd("trace", *[a for pid in pids for a in ("--pid", str(pid))],
                        "--stats-file", stats_file, *args)
    tracer = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        if sites:
            await_sites(tracer, sites)
    except BaseException:
        tracer.kill()
        tracer.wait()
        raise
    return tracer


def stop_tracer(tracer: subprocess.Popen, stats_file: str):
    """SIGINT the tracer (it flushes and writes its accounting); returns (its stderr, that accounting)."""
    tracer.send_signal(signal.SIGINT)
    _, err = tracer.communicate(timeout=120)
    with open(stats_file) as f:
        return err, json.load(f)


def settle(collector, expected: int, limit_s: float, quiet_s: float = 1.0) -> None:
    """Wait (at most ``limit_s``) until ``collector`` has counted ``expected`` spans, or nothing new
    came for ``quiet_s``: the rest was dropped (and counted) or is still queued."""
    deadline = time.monotonic() + limit_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline and collector.count < expected:
        if collector.count != last:
            last, since = collector.count, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.1)


def lost_by_reason(stats: dict) -> dict:
    """The tracer's losses by reason: the kernel's (ring buffer full or its reserve failed with room, open-span map
    full, a one-hit payload unreadable, one-hit handler busy), then its own."""
    k = stats["kernel"]
    return {"ring_buffer_full": k["span_rb_full"], "reserve_failed_with_room": k["span_reserve_failed"],
            "open_span_map_full": k["start_map_full"], "bad_span_payload": k["bad_span_payload"],
            "one_hit_busy": k["one_hit_busy"], **stats["dropped"]}


def clean_up(tracer: Optional[subprocess.Popen], gens, receiver, stats_file: str) -> None:
    if tracer is not None and tracer.poll() is None:
        tracer.kill()
    for g in gens:
        g.close()
    receiver.stop()
    os.unlink(stats_file)


def memory_kib(pid: int) -> dict:
    """VmRSS and VmHWM (peak RSS) of a process, KiB."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line[:5]] = int(line.split()[1])
    return out


# --- the soak ---------------------------------------------------------------------------------

def start_soak_generator(index: int, threads: int, rate: Optional[float]) -> Gen:
    """One soak generator process (tests.support.soak_app)."""
    argv = [sys.executable, "-m", "tests.support.soak_app", str(index), "--threads", str(threads)]
    if rate:
        argv += ["--rate", str(rate)]
    return Gen(argv)


def _sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.monotonic()))


def soak(procs: int = 4, threads: int = 4, seconds: float = 60.0, rate: Optional[float] = None,
         outage: Optional[Tuple[float, float]] = None, tracer_args: Sequence[str] = ()) -> dict:
    """One soak run (bench/bench_soak.py's doc says what it does); returns the numbers.
    ``outage`` is (start, seconds)."""

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
    gens = [start_soak_generator(i, threads, rate / procs if rate else None) for i in range(procs)]
    stats_file = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    tracer, count_at_up = None, 0
    try:
        # Semaphores are raised by any tool attached, so the generators' own "wait" could be
        # satisfied by another tracer; start_tracer waits for the tracer's BPF links, its own.
        tracer = start_tracer(stats_file, "--exporter", "otlp", "--otlp-endpoint", receiver.endpoint,
                              "-v", *tracer_args, pids=[g.pid for g in gens],
                              sites=SOAK_SITES_PER_GENERATOR * procs)
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
        settle(collector, fired, limit_s=60.0, quiet_s=2.0)
        peak = memory_kib(tracer.pid)["VmHWM"]
        t_stop = time.monotonic()
        err, stats = stop_tracer(tracer, stats_file)
        stop_s = time.monotonic() - t_stop
    finally:
        clean_up(tracer, gens, receiver, stats_file)
    return {
        "procs": procs, "threads": threads, "seconds": seconds, "rate": rate, "outage": outage,
        "fired": fired, "fired_per_s": fired / fire_s, "exported": stats["exported"],
        "received": collector.count, "lost": stats["lost"], "lost_by_reason": lost_by_reason(stats),
        "open_at_exit": stats["open_at_exit"], "end_without_start": stats["kernel"]["end_without_start"],
        "sampled_out": stats["sampled_out"],
        "unaccounted": fired - stats["exported"] - stats["lost"] - stats["sampled_out"] - stats["open_at_exit"],
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
        "  lost %d %s; sampled out %d; still open at exit %d; unaccounted %d -> %s"
        % (r["lost"], {k: v for k, v in r["lost_by_reason"].items() if v}, r["sampled_out"], r["open_at_exit"],
           r["unaccounted"],
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
