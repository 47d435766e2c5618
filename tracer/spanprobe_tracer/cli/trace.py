"""`spanprobe trace`: attach to providers and export what their probes report.

Checks run in the order a user can fix them, each failing with its own exit
status (errors.ExitStatus): privileges, the target pids, providers in them,
the exporter (OTLP endpoint reachable), then the BPF toolchain. Only then is
anything attached. SIGINT and SIGTERM stop the session and flush: what the
ring buffer and the export queue hold is exported (within --flush-timeout)
and the loss accounting is printed.

A person watching gets told what is happening: a ready line on stderr once
the first scan's providers are attached (--all takes seconds), a warning
when --pid leaves out child processes that hold providers (a pre-fork
server's workers), and a hint at the end when nothing was ever traced.

With --ebpf nothing is compiled or attached: the C of the core module and of
each module the providers found would need is printed, as bcc's tools do.
"""

from __future__ import annotations

import argparse
import gc
import os
import json
import logging
import re
import signal
import sys
import threading
import time
from typing import List

from ..discover import Scanner, procfs
from ..errors import (BpfUnavailable, ExitStatus, NoProviders, NoSuchProcess, NotPermitted, TracerError)
from ..export import ConsoleExporter, ExportPipeline, JsonLinesExporter
from ..kernel import CaptureConfig, ModuleCache, ModuleError, Planner, privileges, render_core, render_module
from ..kernel.metrics import DEFAULT_BOUNDS_MS, bounds_ns, parse_bounds
from ..kernel.sampling import SAMPLERS, resolve_sampler
from ..session import LaunchError, Launched, Session, Stats, Targets, descendants, watch_dlopen

log = logging.getLogger("spanprobe.tracer")

_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(ns|us|µs|ms|s)?\s*\Z")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, None: 1_000_000}


def parse_duration_ns(text: str) -> int:
    """'250us', '5ms', '1.5s', '2' (milliseconds) -> nanoseconds."""
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError("%r is not a duration (examples: 500us, 5ms, 1.5s)" % text)
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _header(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError("header %r is not KEY=VALUE" % text)
    return key.strip(), value.strip()


def add_otlp_options(parser: argparse.ArgumentParser, endpoint_help: str = "") -> None:
    """The --otlp-* flags, shared by `spanprobe trace` and `spanprobe demo`."""
    otlp = parser.add_argument_group("OTLP (flags override the standard OTEL_EXPORTER_OTLP_* variables)")
    otlp.add_argument("--otlp-endpoint", metavar="URL",
                      help=endpoint_help or "collector address (default: OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT, "
                      "else http://localhost:4317 for grpc, http://localhost:4318 for http/protobuf, where a URL "
                      "without a path gets /v1/traces)")
    otlp.add_argument("--otlp-protocol", choices=("grpc", "http/protobuf"),
                      help="default: OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL, else grpc")
    otlp.add_argument("--otlp-header", type=_header, action="append", default=[], metavar="KEY=VALUE",
                      help="extra request header (repeatable; OTEL_EXPORTER_OTLP_HEADERS otherwise)")
    otlp.add_argument("--otlp-timeout", type=float, metavar="SECONDS",
                      help="per-export timeout, retries included (0: none; OTEL_EXPORTER_OTLP_TIMEOUT is in ms)")
    otlp.add_argument("--otlp-compression", choices=("gzip", "deflate", "none"), help="deflate: http/protobuf only")
    otlp.add_argument("--otlp-insecure", action="store_true", default=None,
                      help="gRPC without TLS for an endpoint without a scheme (http:// and https:// decide themselves)")
    otlp.add_argument("--otlp-certificate", metavar="FILE", help="CA certificates (PEM) to verify the collector with")
    otlp.add_argument("--otlp-client-key", metavar="FILE", help="private key (PEM) for mutual TLS")
    otlp.add_argument("--otlp-client-certificate", metavar="FILE", help="certificate (PEM) for mutual TLS")
    otlp.add_argument("--otlp-no-check", action="store_true",
                      help="start even if the endpoint is unreachable (spans that cannot be delivered are counted)")


def configure(parser: argparse.ArgumentParser) -> None:
    which = parser.add_argument_group("what to trace (one of)")
    which.add_argument("--pid", "-p", type=int, action="append", default=[], metavar="PID",
                       help="trace this process (repeatable)")
    which.add_argument("--all", "-a", action="store_true",
                       help="trace every process on the host, including ones that start later")
    which.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS",
                       help="start COMMAND and trace it (and its children) from its first probe; "
                            "exit with its exit status")
    out = parser.add_argument_group("output")
    out.add_argument("--exporter", "-e", choices=("console", "otlp", "jsonl"), default="console",
                     help="console (default): traces as trees; otlp: to a collector; jsonl: one JSON span per line")
    out.add_argument("--output", "-o", metavar="FILE", help="file for --exporter jsonl (default: standard output)")
    out.add_argument("--duration", "-d", type=float, metavar="SECONDS", help="stop after this many seconds")
    out.add_argument("--stats-file", metavar="FILE",
                     help="write the final accounting (received, exported, lost by reason) as JSON")
    out.add_argument("--verbose", "-v", action="count", default=0,
                     help="report accounting periodically (-vv: debug log)")
    out.add_argument("--ebpf", action="store_true",
                     help="print the BPF C the tracer would load for the providers it finds (the core module, "
                          "then one module per set of argument shapes) and exit; nothing is compiled or attached")
    add_otlp_options(parser)
    cap = parser.add_argument_group("capture")
    cap.add_argument("--string-size", type=int, default=256, metavar="BYTES",
                     help="bytes captured of each str/bytes argument, 1-4096 (default 256); longer values "
                          "are cut and listed in spanprobe.truncated")
    cap.add_argument("--min-duration", type=parse_duration_ns, default=0, metavar="DURATION",
                     help="only spans at least this long leave the kernel (e.g. 500us, 5ms)")
    cap.add_argument("--max-open-spans", type=int, default=65536, metavar="N",
                     help="started-but-not-ended spans remembered per span type (default 65536)")
    cap.add_argument("--ring-buffer-mb", type=int, default=16, metavar="MB",
                     help="kernel ring buffer size, a power of two (default 16)")
    cap.add_argument("--paired-spans", action="store_true",
                     help="trace every span by its start and end probes (two probe hits a span), also spans that "
                          "have a one-hit span probe (one hit): for comparisons")
    cap.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                     help="with --pid: wait this long for a provider to be loaded before giving up")
    cap.add_argument("--flush-timeout", type=float, default=10.0, metavar="SECONDS",
                     help="at exit, time allowed to export what is still queued (default 10)")
    smp = parser.add_argument_group(
        "sampling and span metrics (flags override OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG, "
        "OTEL_METRICS_EXPORTER, OTEL_METRIC_EXPORT_INTERVAL)")
    smp.add_argument("--sampler", metavar="NAME",
                     help="which traces leave the kernel, decided from the trace id as OpenTelemetry's samplers do: "
                          "%s (default parentbased_always_on); adaptive lowers the ratio under overload"
                          % ", ".join(SAMPLERS))
    smp.add_argument("--sampler-arg", metavar="ARG",
                     help="the ratio (0..1) of traceidratio and parentbased_traceidratio; for adaptive, the most "
                          "spans per second to keep (optional)")
    smp.add_argument("--metrics-exporter", choices=("otlp", "console", "none"),
                     help="span metrics from every span (counted in the kernel, sampled or not): otlp (same endpoint "
                          "settings, metrics signal), console (standard error) or none; default "
                          "OTEL_METRICS_EXPORTER, else otlp with --exporter otlp and none otherwise")
    smp.add_argument("--metrics-interval", type=float, metavar="SECONDS",
                     help="seconds between span metrics exports (default OTEL_METRIC_EXPORT_INTERVAL ms, else 60)")
    smp.add_argument("--histogram-buckets", metavar="MS,MS,...",
                     help="the duration histogram's bucket bounds in milliseconds (default OpenTelemetry's: %s)"
                          % ",".join("%g" % b for b in DEFAULT_BOUNDS_MS))
    cap.add_argument("--drain-interval", type=float, default=0.1, help=argparse.SUPPRESS)
    cap.add_argument("--scan-interval", type=float, default=0.25, help=argparse.SUPPRESS)
    cap.add_argument("--queue-size", type=int, default=65536, help=argparse.SUPPRESS)


def _command(args) -> List[str]:
    cmd = list(args.command or [])
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    return cmd


def _check_targets(args, command: List[str]) -> None:
    chosen = sum((bool(args.pid), bool(args.all), bool(command)))
    if chosen != 1:
        raise TracerError("say what to trace: --pid PID, --all, or -- COMMAND ARGS (exactly one)",
                          ExitStatus.USAGE)
    if args.output and args.exporter != "jsonl":
        raise TracerError("--output goes with --exporter jsonl", ExitStatus.USAGE)
    if not 1 <= args.string_size <= 4096:
        raise TracerError("--string-size must be between 1 and 4096", ExitStatus.USAGE)
    rb = args.ring_buffer_mb
    if rb < 1 or rb & (rb - 1):
        raise TracerError("--ring-buffer-mb must be a power of two", ExitStatus.USAGE)


def _refusal(pid: int) -> str:
    """Why reading /proc/PID/maps was refused, and what would help."""
    if os.geteuid() != 0:
        return "not allowed to trace pid %d (cannot read its memory map); run as root" % pid
    return ("the kernel refused access to pid %d's memory map even to root: it is not dumpable, lives in another user "
            "namespace, or Yama's ptrace_scope forbids it (/proc/sys/kernel/yama/ptrace_scope)" % pid)


def children_with_providers(pids: List[int], scanner: Scanner) -> List[int]:
    """Descendants of ``pids`` (not themselves in ``pids``) that hold a spanprobe provider now."""
    found = []
    for pid in pids:
        for child in descendants(pid)[1:]:
            if child in pids or child in found:
                continue
            try:
                if scanner.scan(child).providers:
                    found.append(child)
            except (procfs.ProcessGone, OSError):
                continue
    return sorted(found)


def _pid_options(pids: List[int]) -> str:
    return " ".join("--pid %d" % pid for pid in pids)


def _wait_for_providers(pids: List[int], wait_s: float) -> None:
    """Fail with NoSuchProcess / NotPermitted / NoProviders before anything is loaded."""
    scanner = Scanner(warn=lambda msg: print("spanprobe: warning: " + msg, file=sys.stderr))
    deadline = time.monotonic() + wait_s
    while True:
        found = False
        for pid in pids:
            try:
                if scanner.scan(pid).providers:
                    found = True
            except procfs.ProcessGone:
                raise NoSuchProcess("no process with pid %d" % pid) from None
            except PermissionError:
                raise NotPermitted(_refusal(pid)) from None
        if found:
            return
        if time.monotonic() >= deadline:
            children = children_with_providers(pids, scanner)
            if children:
                raise NoProviders(
                    "no spanprobe providers in pid %s, but its child processes %s have them (a pre-fork "
                    "server's workers, for example): trace them with %s, or every process with --all"
                    % (", ".join(map(str, pids)), ", ".join(map(str, children)), _pid_options(children)))
            raise NoProviders(
                "no spanprobe providers in pid %s. A provider appears once the application has called "
                "Provider.load(); use --wait SECONDS to wait for one, and `spanprobe list --pid PID` to check"
                % ", ".join(map(str, pids)))
        time.sleep(0.2)


def _make_exporter(args, stats: Stats):
    if args.exporter == "console":
        return ConsoleExporter()
    if args.exporter == "jsonl":
        return JsonLinesExporter(args.output)
    return otlp_exporter(args, on_rejected=lambda n, _message: stats.reject(n),
                         on_events_rejected=lambda n, _message: stats.reject_events(n))


def otlp_exporter(args, on_rejected=None, on_events_rejected=None):
    """The OTLP exporter the --otlp-* flags (add_otlp_options) describe, once its endpoint answers:
    spans with the traces signal's settings, events with the logs signal's.

    ``on_rejected(count, message)`` hears of spans the collector refused (an OTLP partial success),
    ``on_events_rejected`` of events.
    """
    # Here, not at the top: grpcio and the protobuf descriptors load only when OTLP is used.
    from ..export.otlp.client import check_reachable
    from ..export.otlp.span_exporter import OtlpSpanExporter

    settings, events_settings = otlp_settings("traces", args), otlp_settings("logs", args)
    if not args.otlp_no_check:
        check_reachable(settings)
        if (events_settings.host, events_settings.port) != (settings.host, settings.port):
            check_reachable(events_settings)
    exporter = OtlpSpanExporter(settings, on_rejected=on_rejected, events_settings=events_settings,
                                on_events_rejected=on_events_rejected)
    log.info("exporting %s; events %s", settings.describe(), events_settings.describe())
    return exporter


def metrics_exporter_name(args, env=os.environ) -> str:
    """--metrics-exporter, else OTEL_METRICS_EXPORTER, else otlp when spans go to OTLP and none otherwise."""
    if args.metrics_exporter:
        return args.metrics_exporter
    value = (env.get("OTEL_METRICS_EXPORTER") or "").strip().lower()
    if not value:
        return "otlp" if args.exporter == "otlp" else "none"
    if value not in ("otlp", "console", "none"):
        raise TracerError("OTEL_METRICS_EXPORTER=%r: spanprobe exports span metrics to otlp, console or none"
                          % env.get("OTEL_METRICS_EXPORTER"), ExitStatus.USAGE)
    return value


def metrics_interval(args, env=os.environ) -> float:
    """Seconds between span metrics exports: --metrics-interval, else OTEL_METRIC_EXPORT_INTERVAL (ms), else 60."""
    if args.metrics_interval is not None:
        if not args.metrics_interval > 0:
            raise TracerError("--metrics-interval must be a positive number of seconds", ExitStatus.USAGE)
        return args.metrics_interval
    text = (env.get("OTEL_METRIC_EXPORT_INTERVAL") or "").strip()
    if not text:
        return 60.0
    if not text.isdigit() or int(text) == 0:
        raise TracerError("OTEL_METRIC_EXPORT_INTERVAL=%r is not a positive whole number of milliseconds" % text,
                          ExitStatus.USAGE)
    return int(text) / 1000.0


def histogram_bounds_ms(args):
    if args.histogram_buckets is None:
        return DEFAULT_BOUNDS_MS
    try:
        return parse_bounds(args.histogram_buckets, "--histogram-buckets")
    except ValueError as exc:
        raise TracerError(str(exc), ExitStatus.USAGE) from None


def otlp_settings(signal: str, args):
    """The OTLP settings of ``signal`` the --otlp-* flags and the environment give."""
    from ..export.otlp.settings import Flags, resolve
    return resolve(signal, Flags(
        endpoint=args.otlp_endpoint, protocol=args.otlp_protocol, headers=args.otlp_header,
        timeout=args.otlp_timeout, compression=args.otlp_compression, insecure=args.otlp_insecure,
        certificate=args.otlp_certificate, client_key=args.otlp_client_key,
        client_certificate=args.otlp_client_certificate))


def capture_config(args) -> CaptureConfig:
    """What the capture, sampling and metrics flags ask the kernel side to do."""
    return CaptureConfig(string_max=args.string_size, min_duration_ns=args.min_duration,
                         max_open_spans=args.max_open_spans, ringbuf_bytes=args.ring_buffer_mb << 20,
                         one_hit=not args.paired_spans,
                         sampler=resolve_sampler(args.sampler, args.sampler_arg),
                         metrics=metrics_exporter_name(args) != "none",
                         histogram_bounds_ns=bounds_ns(histogram_bounds_ms(args)))


def metrics_sender(args, stats: Stats):
    """The span metrics exporter (in its thread) the options ask for, or None; failed exports go to ``stats``."""
    from ..export.span_metrics import ConsoleMetricsExporter, MetricsSender, OtlpMetricsExporter
    name = metrics_exporter_name(args)
    if name == "none":
        return None
    bounds = histogram_bounds_ms(args)
    if name == "console":
        return MetricsSender(ConsoleMetricsExporter(sys.stderr, bounds))
    from ..export.otlp.client import check_reachable
    settings = otlp_settings("metrics", args)
    if not args.otlp_no_check:
        check_reachable(settings)
    log.info("exporting span metrics %s", settings.describe())
    return MetricsSender(OtlpMetricsExporter(settings, bounds), on_failed=lambda: stats.add("metrics_exports_failed"))


def load_modules(config: CaptureConfig) -> ModuleCache:
    """The module cache, its core module compiled by bcc; BpfUnavailable if it cannot be."""
    try:
        return ModuleCache(config)
    except ImportError as exc:
        raise BpfUnavailable("bcc is not importable (%s): the tracer runs on the Python that has "
                             "python3-bpfcc (Debian's /usr/bin/python3, or a venv made with "
                             "--system-site-packages); see `spanprobe doctor`" % exc) from None
    except ModuleError as exc:
        raise BpfUnavailable(str(exc)) from None


def print_ebpf(args, command: List[str], out=None) -> int:
    """--ebpf: the C of the core module and of each module the targets' providers need.

    Modules are numbered in the order their providers are found, as a
    tracer started now would number them.
    """
    out = out or sys.stdout
    if command:
        raise TracerError("--ebpf prints the modules for providers already loaded: use --pid or --all "
                          "(a command's providers exist only once it runs)", ExitStatus.USAGE)
    if args.pid:
        _wait_for_providers(args.pid, args.wait)
        pids = args.pid
    else:
        me = os.getpid()
        pids = [p for p in procfs.pids() if p != me]
    config = capture_config(args)
    planner = Planner(config)
    scanner = Scanner(warn=lambda msg: print("spanprobe: warning: " + msg, file=sys.stderr))
    layouts, users = {}, {}
    for pid in pids:
        try:
            found = scanner.scan(pid).providers
        except (procfs.ProcessGone, OSError):
            continue
        for inst in found:
            plan = planner.plan_for(inst.image)
            if plan.empty:
                continue
            layouts.setdefault(plan.layout.key, plan.layout)
            users.setdefault(plan.layout.key, []).append("provider %s (pid %d)" % (inst.image.provider, pid))
    out.write("/* spanprobe core module: the ring buffer, the counters, the dlopen() watcher */\n")
    out.write(render_core(config))
    for program_id, (key, layout) in enumerate(layouts.items(), start=1):
        out.write("\n/* spanprobe module %d (%d span shapes, %d probe shapes): %s */\n"
                  % (program_id, len(layout.spans), len(layout.points), ", ".join(users[key])))
        out.write(render_module(layout, program_id))
    if not layouts:
        out.write("\n/* no spanprobe provider found: no other module would be loaded */\n")
    out.flush()
    return 0


def _say_ready(args, session: Session, elapsed: float) -> None:
    """The ready line, once the first scan's providers are attached; for --pid, the children left out."""
    what = ("every process" if args.all else "pid %s" % ", ".join(map(str, args.pid)) if args.pid
            else "the command")
    # Counted here: stats.processes and stats.probes are refreshed by the next scan only.
    attached = [att for proc in session.processes.values() for att in proc.attachments.values()]
    processes = sum(1 for proc in session.processes.values() if proc.attachments)
    print("spanprobe: ready: tracing %s: %d providers attached in %d processes (%d probe sites), %.1f s after start"
          % (what, len(attached), processes, sum(att.sites for att in attached), elapsed),
          file=sys.stderr, flush=True)
    if args.pid:
        # A scanner of its own: the session's keeps the state of the processes it traces.
        children = children_with_providers(args.pid, Scanner(warn=lambda _msg: None))
        if children:
            print("spanprobe: warning: child processes %s of pid %s hold spanprobe providers too and are not "
                  "traced (--pid traces only the pids given; a pre-fork server's workers, for example): add %s, "
                  "or trace every process with --all" % (", ".join(map(str, children)),
                                                          ", ".join(map(str, args.pid)), _pid_options(children)),
                  file=sys.stderr, flush=True)


def _say_nothing_traced(args, launched) -> None:
    """Why a session ended with no span: no provider was ever loaded where it looked.

    (A provider found but not attached has had its own warning already.)
    """
    if launched is not None:
        where = "the command (pid %d) and its child processes never loaded" % launched.pid
    elif args.all:
        where = "no process loaded"
    else:
        return  # --pid found a provider before starting (else it failed with status 4)
    print("spanprobe: hint: nothing was traced: %s a spanprobe provider. The application must call "
          "Provider.load() after declaring its probes (docs/sdk.md), or run under spanprobe-instrument "
          "--config FILE (docs/sdk-spans.md); `spanprobe list` shows the providers of running processes"
          % where, file=sys.stderr)


#: Allocations between two young-generation collections of the cyclic garbage collector (Python's
#: default: 700).
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Keep the cyclic garbage collector from costing ~10% of the tracer's CPU (docs/performance.md).

    Spans and their attribute dicts die by reference counting; the collector only
    walks them while they wait in the export queue, a young collection every 700
    allocations (~175 spans), and full collections that walk every object made
    at start (bcc, grpc, the SDK). Those are frozen here, after a last
    collection (gc.freeze: never walked again; freed by reference counting as
    ever, only a cycle among them would stay), and young collections come ~14x
    less often. Cycles made later are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    command = _command(args)
    _check_targets(args, command)
    problem = privileges.problem()
    if problem:
        raise NotPermitted(problem)
    if args.ebpf:
        return print_ebpf(args, command)
    if args.pid:
        _wait_for_providers(args.pid, args.wait)
    stats = Stats()
    config = capture_config(args)
    interval = metrics_interval(args)
    exporter = _make_exporter(args, stats)
    metrics = metrics_sender(args, stats)

    modules = load_modules(config)

    launched = None
    if command:
        launched = Launched(command)
        watch_dlopen(modules.core, launched.pid)

    pipeline = ExportPipeline(exporter, stats, max_queue=args.queue_size)
    targets = Targets(pids=args.pid, everything=args.all, launched=launched)
    verbose_status = args.verbose > 0
    # A status line every 10 s on long runs a person watches (stderr is a terminal), or with -v.
    status_interval = 10.0 if (verbose_status or sys.stderr.isatty()) else 0.0
    session = Session(modules, pipeline, stats, targets, min_duration_ns=args.min_duration,
                      scan_interval=args.scan_interval, drain_interval=args.drain_interval,
                      status_interval=status_interval,
                      ticker=exporter.tick if isinstance(exporter, ConsoleExporter) else None,
                      metrics_sender=metrics, metrics_interval=interval)

    interrupted = threading.Event()

    def on_signal(signum, _frame):
        if launched is not None and launched.returncode is None and not interrupted.is_set():
            # The command decides when it is done (a terminal's ^C reached it too);
            # a second signal, or the grace period, stops the tracer regardless.
            interrupted.set()
            if signum == signal.SIGTERM:
                launched.signal(signal.SIGTERM)
            return
        session.stop_event.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    exit_status = 0
    try:
        if launched is not None:
            try:
                launched.release()
            except LaunchError as exc:
                raise TracerError(str(exc), ExitStatus.ERROR) from None
        session.scan()
        tune_gc()
        deadline = time.monotonic() + args.duration if args.duration else None
        grace_end = [None]

        def finished() -> bool:
            if launched is not None:
                if launched.poll() is not None:
                    return True
                if interrupted.is_set():
                    if grace_end[0] is None:
                        grace_end[0] = time.monotonic() + 5.0
                    return time.monotonic() >= grace_end[0]
                return False
            if args.pid:
                return not any(procfs.alive(pid) for pid in args.pid)
            return False

        next_report = time.monotonic() + 10.0
        ready = False
        while not session.stop_event.is_set() and not finished():
            if not ready and session.settled and (launched is None or session.attached_ever):
                ready = True
                _say_ready(args, session, time.monotonic() - started)
            if deadline is not None and time.monotonic() >= deadline:
                break
            session.step()
            if args.verbose and time.monotonic() >= next_report:
                next_report = time.monotonic() + 10.0
                for line in stats.summary():
                    print("spanprobe: " + line, file=sys.stderr)
        if launched is not None:
            exit_status = launched.stop() or 0
    finally:
        session.close()
        pipeline.shutdown(args.flush_timeout)  # shuts the exporter down too
        if metrics is not None:
            metrics.shutdown(args.flush_timeout)
        for line in stats.summary():
            print("spanprobe: " + line, file=sys.stderr)
        if not session.providers_seen:
            _say_nothing_traced(args, launched)
        if args.stats_file:
            with open(args.stats_file, "w") as f:
                json.dump(stats.as_dict(), f, indent=2)
        modules.close()
        for s, handler in old.items():
            signal.signal(s, handler)
    return exit_status
