"""`spanprobe demo`: the probed simple HTTP server traced end to end, with nothing to set up.

Starts demo 1 (server.DemoServer: ``python -m demo_apps.simplehttp``
serving generated files), traces it from this process with the same BPF
programs, session and export pipeline as `spanprobe trace --pid`, downloads
files from it (a 404 and a directory listing among them) with a progress bar
on stderr, then prints each request's trace as a tree and one line that
accounts for every span. With --otlp-endpoint the spans also go to a
collector (only there with --no-tree).

It waits until the tracer is attached before the first download, and after
the last one until every expected span has arrived, so the trees are
complete. SIGINT and SIGTERM wind it down at once; whatever happens, the
server's process group is stopped and the scratch directory removed.
"""

from __future__ import annotations

import argparse
import http.client
import signal
import sys
import threading
import time
from typing import List

from ...errors import BpfUnavailable, ExitStatus, NotPermitted, TracerError
from ...export import ExportPipeline
from ...kernel import CaptureConfig, privileges
from ...session import Session, Stats, Targets
from .. import trace as tracing
from .progress import Progress
from .report import Collected, Download, Tee, accounting, missing, print_trees
from .server import DOWNLOADS, FILES, DemoServer

DOCTOR_HINT = "`spanprobe doctor` checks everything tracing needs on this machine and says how to fix it"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", "-n", type=int, default=len(DOWNLOADS), metavar="N",
                        help="downloads to make, cycling through %s (default %d: each once)"
                             % (", ".join(DOWNLOADS), len(DOWNLOADS)))
    parser.add_argument("--interval", type=float, default=0.2, metavar="SECONDS",
                        help="pause between downloads (default 0.2)")
    parser.add_argument("--no-tree", action="store_true",
                        help="do not print the traces (with --otlp-endpoint: send them to the collector only)")
    tracing.add_otlp_options(parser, endpoint_help="also send the spans to this OTLP collector "
                             "(e.g. http://localhost:4317); without it nothing leaves this machine")


def say(text: str) -> None:
    print("spanprobe demo: " + text, file=sys.stderr, flush=True)


class Signals:
    """SIGINT/SIGTERM set ``stop``; the demo then winds down, cleaning up, within a second or so.

    Later signals are ignored rather than raised: every wait in the demo is
    bounded, and an exception in the middle of the clean-up is exactly what
    would leave a server running.
    """

    def __init__(self):
        self.stop = threading.Event()
        self.signum = 0

    def _on_signal(self, signum, _frame):
        if not self.stop.is_set():
            self.signum = signum
            self.stop.set()

    def __enter__(self) -> "Signals":
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def fetch(port: int, path: str) -> Download:
    """GET ``path``, straight to the server (http.client: no proxy from the environment)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return Download(path, response.status, len(response.read()))
    except (OSError, http.client.HTTPException) as exc:
        return Download(path, error="%s: %s" % (type(exc).__name__, exc))
    finally:
        conn.close()


def download_all(port: int, paths: List[str], interval: float, stop: threading.Event,
                 progress: Progress, done: List[Download]) -> None:
    for path in paths:
        if stop.is_set():
            return
        d = fetch(port, path)
        done.append(d)
        progress.step("GET %s -> %s" % (path, d.status or d.error))
        if d.error:
            return
        stop.wait(interval)


def wait_attached(session, server: DemoServer, stop: threading.Event, timeout: float = 60.0) -> int:
    """Step the session until the server's provider is attached (compiles take a second or two).

    Returns the number of probe sites attached (0 if stopped first).
    """
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        session.step()
        proc = session.processes.get(server.pid)
        if proc is not None and proc.attachments:
            return sum(a.sites for a in proc.attachments.values())
        if not server.alive():
            raise TracerError("the demo server exited (status %s)%s" % (server.proc.returncode, server.log_tail()))
        if proc is not None and proc.failed and not proc.pending:
            raise BpfUnavailable("could not attach to the demo server's probes (see the warnings above); "
                                 + DOCTOR_HINT)
        if time.monotonic() >= deadline:
            raise TracerError("no spanprobe provider could be attached in the demo server (pid %d) within %.0f s; "
                              "`spanprobe list --pid %d` shows what it has; %s"
                              % (server.pid, timeout, server.pid, DOCTOR_HINT))
    return 0


def drive(session, server: DemoServer, args, stop: threading.Event, collected: Collected) -> List[Download]:
    """The downloads, while the session drains; then wait (bounded) for their last spans."""
    paths = [DOWNLOADS[i % len(DOWNLOADS)] for i in range(args.requests)]
    progress = Progress(len(paths), "spanprobe demo: downloading")
    done: List[Download] = []
    driver = threading.Thread(target=download_all, name="spanprobe-demo-downloads",
                              args=(server.port, paths, args.interval, stop, progress, done), daemon=True)
    driver.start()
    while driver.is_alive():
        session.step()
    progress.finish()
    deadline = time.monotonic() + 10.0
    while missing(collected, done) and not stop.is_set() and time.monotonic() < deadline:
        session.step()
        session.pipeline.flush(1.0)
    return done


def trace_demo(server: DemoServer, args, stop: threading.Event, collected: Collected):
    """Attach to the server, drive the downloads; (downloads, stats, where the spans went)."""
    try:
        modules = tracing.load_modules(CaptureConfig())
    except BpfUnavailable as exc:
        text = str(exc)
        raise BpfUnavailable(text if "spanprobe doctor" in text else text + "; " + DOCTOR_HINT) from None
    try:
        stats = Stats()
        sinks, where = [collected], [] if args.no_tree else ["the terminal"]
        if args.otlp_endpoint:
            sinks.append(tracing.otlp_exporter(args, on_rejected=lambda n, _message: stats.reject(n),
                                               on_events_rejected=lambda n, _message: stats.reject_events(n)))
            where.append("OTLP %s" % args.otlp_endpoint)
        pipeline = ExportPipeline(Tee(sinks), stats)
        session = Session(modules, pipeline, stats, Targets(pids=[server.pid]))
        downloads: List[Download] = []
        try:
            say("attaching to the server's probes (pid %d; compiling BPF takes a second or two) ..." % server.pid)
            sites = wait_attached(session, server, stop)
            if not stop.is_set():
                say("attached to %d probe sites" % sites)
                downloads = drive(session, server, args, stop, collected)
        finally:
            session.close()
            pipeline.shutdown(2.0 if stop.is_set() else 10.0)
    finally:
        modules.close()
    return downloads, stats, " and ".join(where) or "memory only (--no-tree)"


def run(args: argparse.Namespace) -> int:
    if args.requests < 1 or args.interval < 0:
        raise TracerError("--requests must be at least 1 and --interval not negative", ExitStatus.USAGE)
    problem = privileges.problem()
    if problem:
        raise NotPermitted("the demo traces with eBPF: %s. %s" % (problem, DOCTOR_HINT))
    started = time.monotonic()
    collected = Collected()
    with Signals() as signals:
        with DemoServer() as server:
            say("serving %d generated files from %s" % (len(FILES), server.www))
            if server.start(signals.stop):
                say("server pid %d listening on http://127.0.0.1:%d/" % (server.pid, server.port))
                downloads, stats, where = trace_demo(server, args, signals.stop, collected)
        if signals.stop.is_set():
            say("interrupted by %s: server stopped, %s removed"
                % (signal.Signals(signals.signum).name, server.scratch))
            return 128 + signals.signum
    if not args.no_tree:
        print_trees(collected.spans, collected.events, sys.stdout)
    say("server stopped, %s removed" % server.scratch)
    print(accounting(downloads, collected, stats.exported, stats.lost, where, time.monotonic() - started),
          flush=True)
    failed = [d for d in downloads if d.error]
    if failed:
        raise TracerError("download of %s failed: %s" % (failed[0].path, failed[0].error))
    gaps = missing(collected, downloads)
    if gaps or stats.lost:
        for line in stats.summary():
            say(line)
        raise TracerError("not every span arrived (missing: %s; lost: %d)"
                          % (", ".join("%d %s" % (n, name) for name, n in gaps.items()) or "none", stats.lost))
    return 0
