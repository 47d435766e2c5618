"""A tracing session: the loop that drives the stages over the processes it traces.

The loop (one thread; compiles and exports run beside it):

1. drain (session.drain): wait up to ``drain_interval`` on the ring buffer
   (only dlopen notifications wake it early; probe records never do),
   decode every record, build spans, hand them to the export pipeline;
2. act on the dlopen() notifications that drain found: rescan that process,
   attach to what it loaded, resume it;
3. every ``scan_interval``: list the target processes, rescan the ones whose
   memory map changed, compile modules for new argument shapes (in a worker
   thread) and attach them; detach from providers that went away and from
   processes that exited, after draining their last records;
4. housekeeping: re-anchor the clock, release events whose span never came,
   reap open spans past their timeout, refresh counters, move the adaptive
   sampler's ratio (session.adaptive), hand the span metrics to their
   exporter every interval (session.span_metrics), print status.

Targets are a fixed set of pids (``--pid``), every process (``--all``), or a
launched command and its descendants (``-- COMMAND``): session.targets.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set, Tuple

from opentelemetry.sdk.resources import Resource

from ..assemble import SpanBuilder, WallClock, process_resource
from ..decode import Bindings, DecoderCache, LoadRecord
from ..discover import ProviderInstance, Scanner, procfs
from ..export import ExportPipeline
from ..kernel import (AttachError, KernelCounters, Module, ModuleCache, ModuleError, Planner, ProviderPlan,
                      RingBuffer, raise_fd_limit)
from ..kernel.metrics import MetricsTable
from ..kernel.sampling import SamplingBound
from .adaptive import AdaptiveRatio
from .attachments import Attachment, attach_provider
from .drain import Drainer
from .launcher import resume
from .span_metrics import SpanMetrics
from .stats import Stats
from .targets import Targets

log = logging.getLogger("spanprobe.tracer")


@dataclass
class TracedProcess:
    pid: int
    started: int
    resource: Optional[Resource] = None
    attachments: Dict[Tuple[str, int], Attachment] = field(default_factory=dict)
    #: provider keys we gave up on (compile or attach failed), so we do not retry every scan
    failed: Set[Tuple[str, int]] = field(default_factory=set)
    pending: Dict[Tuple[str, int], concurrent.futures.Future] = field(default_factory=dict)


class Session:
    def __init__(self, modules: ModuleCache, pipeline: ExportPipeline, stats: Stats, targets: Targets,
                 scanner: Optional[Scanner] = None, min_duration_ns: int = 0,
                 scan_interval: float = 0.5, drain_interval: float = 0.1,
                 open_span_timeout_s: float = 3600.0, status_interval: float = 0.0,
                 status_out=None, ticker: Optional[Callable[[], None]] = None,
                 warn: Callable[[str], None] = None, metrics_sender=None, metrics_interval: float = 60.0):
        self.modules = modules
        self.pipeline = pipeline
        self.stats = stats
        self.targets = targets
        self._warn = warn or (lambda msg: print("spanprobe: warning: " + msg, file=sys.stderr))
        self.scanner = scanner or Scanner(warn=self._warn)
        self.planner = Planner(modules.config)
        self.bindings = Bindings()
        self.decoders = DecoderCache()
        self.counters = KernelCounters(modules.core)
        self.clock = WallClock()
        self.builder = SpanBuilder(self._resource_for, self.clock.to_wall,
                                   drop_orphan_events=min_duration_ns > 0)
        if getattr(pipeline.exporter, "takes_span_bytes", False):
            # Only OTLP reads the spans: common span records go straight to its bytes.
            from ..export.otlp.records import span_path
            self.bindings.span_path = span_path(self.builder)
        self.scan_interval = scan_interval
        self.open_span_timeout_s = open_span_timeout_s
        self.status_interval = status_interval
        self.status_out = status_out or sys.stderr
        self.ticker = ticker
        self.processes: Dict[int, TracedProcess] = {}
        #: providers attached to since the start, and whether any process was ever seen holding one
        self.attached_ever = 0
        self.providers_seen = False
        self._compiler = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spanprobe-compile")
        self._failed_layouts: Dict[str, str] = {}
        #: dlopen() notifications drains found, acted on once the drain is over (_resume_loaded)
        self._loads: List[LoadRecord] = []
        self._next_scan = 0.0
        self._next_housekeeping = 0.0
        self._next_reap = time.monotonic() + 60.0
        self._next_status = time.monotonic() + status_interval if status_interval else float("inf")
        self.stop_event = threading.Event()
        config = modules.config
        #: Span metrics (kernel.metrics) to ``metrics_sender`` (export.span_metrics), when the modules count them.
        names: Dict[int, str] = {}   # HTTP method and route texts by hash: the drainer fills it
        self.span_metrics = (SpanMetrics(MetricsTable(modules.core), metrics_sender, self._resource_for,
                                         metrics_interval, names, config.histogram_bounds_ns)
                             if config.metrics and metrics_sender else None)
        if self.span_metrics is not None:
            self.builder.observe_api_spans(self.span_metrics.count_api_span)
            self.span_metrics.on_full = lambda: stats.add("metrics_api_series_full")
        #: The adaptive sampler's control loop (session.adaptive).
        self.adaptive = (AdaptiveRatio(SamplingBound(modules.core), config.sampler.max_rate)
                         if config.sampler.name == "adaptive" else None)
        self._last_housekeeping = time.monotonic()
        raise_fd_limit()
        # Records held in userspace per drain, in bytes: one ring buffer's worth.
        ring = RingBuffer(modules.core, modules.config.ringbuf_bytes)
        self.drainer = Drainer(ring, self.bindings, self.builder, pipeline, stats, drain_interval,
                               on_read=self.adaptive.bound.read if self.adaptive is not None else None,
                               names=names)

    def _flush(self) -> None:
        """Drain now, without waiting: the last records of a process or provider about to be detached."""
        self._loads.extend(self.drainer.drain(wait=False))

    # --- processes ------------------------------------------------------------------

    def _resource_for(self, pid: int) -> Resource:
        proc = self.processes.get(pid)
        if proc is not None and proc.resource is not None:
            return proc.resource
        return Resource({"service.name": "unknown_service", "process.pid": pid})

    def _open_starts(self) -> Dict[Tuple[int, int], int]:
        """(pid, tid) -> earliest start of a span open on that thread, over every module's open-span maps."""
        out: Dict[Tuple[int, int], int] = {}
        for module in self.modules.modules:
            try:
                starts = module.open_starts()
            except Exception as exc:  # pragma: no cover
                log.debug("reading open spans: %s", exc)
                continue
            for key, start in starts.items():
                if key not in out or start < out[key]:
                    out[key] = start
        return out

    def scan(self) -> None:
        """Rescan targets: attach new providers, detach what went away."""
        current = set(self.targets.current())
        gone = [pid for pid, proc in self.processes.items()
                if pid not in current or not procfs.alive(pid, proc.started)]
        for pid in gone:
            self._forget(pid)  # which drains their last records first
        self.scanner.retain(current)
        for pid in current:
            self._scan_one(pid)
        self._attach_compiled()
        self.stats.processes = sum(1 for p in self.processes.values() if p.attachments)
        self.stats.probes = sum(a.sites for p in self.processes.values() for a in p.attachments.values())

    def _scan_one(self, pid: int, fresh: bool = False) -> None:
        try:
            result = self.scanner.scan(pid, fresh=fresh)
        except procfs.ProcessGone:
            if pid in self.processes:
                self._forget(pid)
            return
        except PermissionError as exc:
            self.scanner.warn_once("perm:%d" % pid, "pid %d: cannot read its memory map (%s)" % (pid, exc))
            return
        except OSError:
            return
        proc = self.processes.get(pid)
        if proc is not None and proc.started != result.started:
            self._forget(pid)  # pid reused by a new process
            proc = None
        if result.providers:
            self.providers_seen = True
        if proc is None:
            if not result.providers:
                return
            proc = self.processes[pid] = TracedProcess(pid, result.started)
        present = {inst.key: inst for inst in result.providers}
        gone = [k for k in proc.attachments if k not in present]
        if gone:
            self._flush()  # records from the provider's last moments first
        for key in gone:
            log.info("pid %d: provider %s unloaded; detaching", pid, proc.attachments[key].instance.image.provider)
            att = proc.attachments.pop(key)
            att.close()
            self._release(att)
        for key, inst in present.items():
            if key in proc.attachments or key in proc.failed or key in proc.pending:
                continue
            if proc.resource is None:
                try:
                    proc.resource = process_resource(pid, inst.image.schema.get("runtime"),
                                                     inst.image.schema.get("environment"))
                except procfs.ProcessGone:
                    return
            plan = self.planner.plan_for(inst.image)
            if plan.empty:
                proc.failed.add(key)
                self.scanner.warn_once("empty:%d" % id(inst.image),
                                       "provider %s (pid %d) has no probe spanprobe can trace"
                                       % (inst.image.provider, pid))
                continue
            if plan.layout.key in self._failed_layouts:
                proc.failed.add(key)
                continue
            module = self.modules.cached(plan.layout)
            if module is not None:  # same shapes seen before: attach now, no compile
                self._attach(proc, key, inst, plan, module)
                continue
            proc.pending[key] = self._compiler.submit(self._compile, plan, inst)

    @property
    def settled(self) -> bool:
        """No compile in flight: what the scans found so far is attached (or failed)."""
        return not any(proc.pending for proc in self.processes.values())

    def _compile(self, plan: ProviderPlan, inst: ProviderInstance):
        """Runs in the compile thread; never raises (the result says what failed)."""
        try:
            return inst, plan, self.modules.module_for(plan.layout), None
        except ModuleError as exc:
            return inst, plan, None, exc

    def _attach_compiled(self, wait: bool = False) -> None:
        for proc in list(self.processes.values()):
            for key, future in list(proc.pending.items()):
                if not future.done() and not wait:
                    continue
                del proc.pending[key]
                if future.cancelled():
                    continue
                inst, plan, module, error = future.result()
                if error is not None:
                    proc.failed.add(key)
                    self._failed_layouts[plan.layout.key] = str(error)
                    self.scanner.warn_once("compile:%s" % plan.layout.key, str(error))
                    continue
                self._attach(proc, key, inst, plan, module)

    def _attach(self, proc: TracedProcess, key, inst: ProviderInstance, plan: ProviderPlan, module: Module) -> None:
        try:
            att = attach_provider(inst, plan, module, self.bindings, self.decoders.for_plan(plan))
        except AttachError as exc:
            proc.failed.add(key)
            if procfs.alive(proc.pid, proc.started):
                self.scanner.warn_once("attach:%d:%s" % (proc.pid, key),
                                       "pid %d: cannot attach to provider %s: %s"
                                       % (proc.pid, inst.image.provider, exc))
            return
        proc.attachments[key] = att
        if self.span_metrics is not None:
            self.span_metrics.watch(att.span_ends, proc.pid)
        self.attached_ever += 1
        log.info("pid %d: attached to provider %s (%d probe sites)", proc.pid, inst.image.provider, att.sites)

    def _release(self, att: Attachment) -> None:
        """A detached provider's cookies: their span metrics taken out of the kernel, then unbound."""
        if self.span_metrics is not None:
            self.span_metrics.retire(att.span_ends)
        self.bindings.unbind(att.cookies)

    def _forget(self, pid: int) -> None:
        """Detach from a process that exited or is no longer a target, after its last records."""
        proc = self.processes.get(pid)
        self.scanner.forget(pid)
        if proc is None:
            return
        self._flush()  # its last records, while its cookies still mean something
        modules = set()
        for att in proc.attachments.values():
            att.close()
            self._release(att)
            modules.add(att.module)
        for future in proc.pending.values():
            future.cancel()
        if not procfs.alive(pid, proc.started):
            for module in modules:
                try:
                    self.stats.unmatched_exited += module.reap(pid)
                except Exception as exc:  # pragma: no cover
                    log.debug("reaping pid %d: %s", pid, exc)
        # Events still waiting for a span of this process will not get one; its
        # resource is still known while they are released.
        self.pipeline.submit(self.builder.expire_events(pid=pid))
        self.processes.pop(pid, None)

    # --- dlopen stops (-- COMMAND) ---------------------------------------------------

    def _resume_loaded(self) -> None:
        """Act on the dlopen() stops drains found: attach to what each process loaded, then resume it.

        Attaching may drain again (the last records of a provider that went
        away); stops found then are taken in turn, in this same loop.
        """
        while self._loads:
            pid = self._loads.pop(0).pid
            try:
                if pid in set(self.targets.current()):
                    self._scan_one(pid, fresh=True)
                    self._attach_compiled(wait=True)
            finally:
                resume(pid)

    # --- housekeeping -----------------------------------------------------------------

    def _housekeeping(self, now: float) -> None:
        self.clock.maybe_reanchor()
        self.pipeline.submit(self.builder.expire_events(open_starts=self._open_starts))
        self.stats.kernel = self.counters.read()
        if self.adaptive is not None:
            self.stats.sampler_ratio = self.adaptive.update(
                self.stats.kernel, self.stats.dropped["queue_full"], self.stats.exported,
                self.pipeline.queued / self.pipeline.max_queue, now - self._last_housekeeping)
        self._last_housekeeping = now
        if self.span_metrics is not None:
            self.span_metrics.tick(now)
        if now >= self._next_reap:
            self._next_reap = now + 60.0
            older = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - int(self.open_span_timeout_s * 1e9)
            for module in self.modules.modules:
                try:
                    self.stats.unmatched_expired += module.reap(None, older_than_ns=older)
                except Exception as exc:  # pragma: no cover
                    log.debug("reaping open spans: %s", exc)
        if self.ticker is not None:
            self.ticker()
        if now >= self._next_status:
            self._next_status = now + self.status_interval
            print("spanprobe: " + self.stats.status_line(), file=self.status_out, flush=True)

    # --- running ------------------------------------------------------------------------

    def step(self) -> None:
        if self.pipeline.queued >= self.pipeline.max_queue // 4:
            # Backpressure: the exporter is behind. Leave records in the ring buffer
            # (if it fills, the kernel drops and counts them, at no cost here) rather
            # than decode spans the full queue would drop, and give the export
            # thread the interpreter.
            time.sleep(self.drainer.interval)
        else:
            self._loads.extend(self.drainer.drain())
        self._resume_loaded()
        now = time.monotonic()
        if now >= self._next_scan:
            self.scan()
            self._resume_loaded()
            # Rescan as often as scan_interval allows while a scan costs under 2% of a core
            # (a few pids: every 0.25 s); on a host with thousands of processes, less often.
            cost = time.monotonic() - now
            self._next_scan = now + min(max(self.scan_interval, 50 * cost), 2.0)
        else:
            self._attach_compiled()
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + 0.5
            self._housekeeping(now)

    def close(self) -> None:
        """Detach everything, drain the last records, release held events.

        Processes that exited since the last scan are forgotten properly (their
        open spans counted as never ended); spans still open in live processes
        are counted as open at exit. Processes stopped at a dlopen() are
        resumed, untraced from then on.
        """
        self._flush()
        for pid, proc in list(self.processes.items()):
            if not procfs.alive(pid, proc.started):
                self._forget(pid)
        try:
            self.stats.open_at_exit = sum(m.open_spans() for m in self.modules.modules)
        except Exception as exc:  # pragma: no cover
            log.debug("counting open spans: %s", exc)
        for proc in list(self.processes.values()):
            for att in proc.attachments.values():
                att.close()
            for future in proc.pending.values():
                future.cancel()
        self._compiler.shutdown(wait=False, cancel_futures=True)
        self._flush()
        for load in self._loads:
            resume(load.pid)
        self._loads = []
        self.pipeline.submit(self.builder.expire_events(everything=True))
        self.stats.kernel = self.counters.read()
        if self.span_metrics is not None:
            self.span_metrics.tick(time.monotonic(), force=True)
        self.stats.processes = 0
