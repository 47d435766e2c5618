"""A tracing session: which processes, attach and detach, drain, build, hand to the exporter.

The loop (one thread; compiles and exports run beside it):

1. wait up to ``drain_interval`` on the ring buffer (only dlopen notifications
   wake it early; probe records never do), then consume every record;
2. decode records into spans and hand them to the export pipeline;
3. every ``scan_interval``: list the target processes, rescan the ones whose
   memory map changed, compile modules for new argument shapes (in a worker
   thread) and attach them; detach from providers that went away and from
   processes that exited, after draining their last records;
4. housekeeping: re-anchor the clock, release events whose span never came,
   reap open spans past their timeout, refresh counters, print status.

Targets are a fixed set of pids (``--pid``), every process (``--all``), or a
launched command and its descendants (``-- COMMAND``).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

from opentelemetry.sdk.resources import Resource

from . import procfs, uprobe
from .clock import WallClock
from .discovery import ProviderInstance, Scanner
from .launcher import Launched
from .pipeline import ExportPipeline
from .program import KIND_LOAD, Module, Plan, ProgramError, Programs, decoders_for
from .records import LoadRecord, PointRecord, SpanRecord
from .resource import process_resource
from .spans import SpanBuilder
from .stats import Stats

log = logging.getLogger("spanprobe.tracer")


@dataclass
class Attachment:
    """One provider attached in one process: the fds that hold its uprobes, and their cookies."""

    instance: ProviderInstance
    module: Module
    fds: List[int]
    cookies: List[int]
    sites: int = 0

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


@dataclass
class TracedProcess:
    pid: int
    started: int
    resource: Optional[Resource] = None
    attachments: Dict[Tuple[str, int], Attachment] = field(default_factory=dict)
    #: provider keys we gave up on (compile or attach failed), so we do not retry every scan
    failed: Set[Tuple[str, int]] = field(default_factory=set)
    pending: Dict[Tuple[str, int], concurrent.futures.Future] = field(default_factory=dict)


class Targets:
    """Which processes the session traces."""

    def __init__(self, pids: Iterable[int] = (), everything: bool = False, launched: Optional[Launched] = None):
        self.pids = list(pids)
        self.everything = everything
        self.launched = launched
        self._self = os.getpid()

    def current(self) -> List[int]:
        if self.everything:
            return [p for p in procfs.pids() if p != self._self]
        if self.launched is not None:
            return self._descendants(self.launched.pid)
        return list(self.pids)

    @staticmethod
    def _descendants(root: int) -> List[int]:
        children: Dict[int, List[int]] = {}
        for pid in procfs.pids():
            try:
                children.setdefault(procfs.parent_pid(pid), []).append(pid)
            except (procfs.ProcessGone, ValueError, IndexError, OSError):
                continue
        out, todo = [], [root]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, []))
        return out


class Session:
    def __init__(self, programs: Programs, pipeline: ExportPipeline, stats: Stats, targets: Targets,
                 scanner: Optional[Scanner] = None, min_duration_ns: int = 0,
                 scan_interval: float = 0.5, drain_interval: float = 0.1,
                 open_span_timeout_s: float = 3600.0, status_interval: float = 0.0,
                 status_out=None, ticker: Optional[Callable[[], None]] = None,
                 warn: Callable[[str], None] = None):
        self.programs = programs
        self.pipeline = pipeline
        self.stats = stats
        self.targets = targets
        self._warn = warn or (lambda msg: print("spanprobe: warning: " + msg, file=sys.stderr))
        self.scanner = scanner or Scanner(warn=self._warn)
        self.clock = WallClock()
        self.builder = SpanBuilder(self._resource_for, self.clock.to_wall,
                                   drop_orphan_events=min_duration_ns > 0)
        self.scan_interval = scan_interval
        self.drain_interval = drain_interval
        self.open_span_timeout_s = open_span_timeout_s
        self.status_interval = status_interval
        self.status_out = status_out or sys.stderr
        self.ticker = ticker
        self.processes: Dict[int, TracedProcess] = {}
        self._raw: List[bytes] = []
        self._raw_bytes = 0
        #: Records held in userspace per drain, in bytes: one ring buffer's worth.
        self._raw_cap = programs.config.ringbuf_bytes
        self._compiler = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spanprobe-compile")
        self._failed_layouts: Dict[str, str] = {}
        self._stopped_by_us: Set[int] = set()
        self._draining = False
        self._next_drain = 0.0
        self._next_scan = 0.0
        self._next_housekeeping = 0.0
        self._next_reap = time.monotonic() + 60.0
        self._next_status = time.monotonic() + status_interval if status_interval else float("inf")
        self.stop_event = threading.Event()
        uprobe.raise_fd_limit()
        self._string_at = ctypes.string_at
        self._ring = programs.core.get_table("sp_events")
        self._ring.open_ring_buffer(self._on_record)

    # --- ring buffer ---------------------------------------------------------------

    def _on_record(self, _ctx, data, size):
        self._raw.append(self._string_at(data, size))
        self._raw_bytes += size
        # libbpf keeps consuming while producers keep adding: against producers faster
        # than this loop, one consume would never end and _raw would grow without bound.
        # A negative return stops it; libbpf has already moved past this record (kept).
        return -1 if self._raw_bytes >= self._raw_cap else 0

    def drain(self, wait: bool = True) -> None:
        """Collect every record in the ring buffer and turn it into spans.

        With ``wait``, first sleeps until ``drain_interval`` after the previous
        timed drain began (dlopen notifications wake it early): a drain that
        took long is followed at once by the next, so a busy tracer never
        idles while records pile up.

        A drain asked for while records are being processed (a dlopen stop
        rescanning a process, which detaches what went away) does nothing: the
        one under way, and the next, take what is left.
        """
        if self._draining:
            return
        core = self.programs.core
        if wait:
            now = time.monotonic()
            remaining = self._next_drain - now
            if remaining > 0.001:
                core.ring_buffer_poll(int(remaining * 1000))
            self._next_drain = max(self._next_drain + self.drain_interval, time.monotonic())
        core.ring_buffer_consume()
        raw, self._raw = self._raw, []
        self._raw_bytes = 0
        if raw:
            self._draining = True
            try:
                self._process(raw)
            finally:
                self._draining = False

    def _process(self, raw: List[bytes]) -> None:
        decode = self.programs.decode
        builder = self.builder
        out = []
        loads = []
        spans_received = points_received = errors = shed = 0
        # Build no more spans than the export queue has room for: under overload the
        # rest would be dropped anyway, after costing CPU and memory.
        room = self.pipeline.max_queue - self.pipeline.queued
        for rec in raw:
            if len(out) >= room and rec[0] != KIND_LOAD:  # rec[0]: the record's kind (a u16, little-endian)
                shed += 1
                continue
            try:
                item = decode(rec)
            except Exception as exc:  # a decoder bug must not stop the session
                errors += 1
                log.debug("undecodable record: %s", exc)
                continue
            if isinstance(item, SpanRecord):
                spans_received += 1
                out.append(builder.span(item))
            elif isinstance(item, PointRecord):
                points_received += 1
                span = builder.point(item)
                if span is not None:
                    out.append(span)
            elif isinstance(item, LoadRecord):
                loads.append(item)
            else:
                errors += 1
        self.stats.spans_received += spans_received
        self.stats.points_received += points_received
        self.stats.decode_errors += errors
        if shed:
            self.stats.drop("queue_full", shed)
        self.pipeline.submit(out)
        for load in loads:
            self._on_load(load)

    # --- processes ------------------------------------------------------------------

    def _resource_for(self, pid: int) -> Resource:
        proc = self.processes.get(pid)
        if proc is not None and proc.resource is not None:
            return proc.resource
        return Resource({"service.name": "unknown_service", "process.pid": pid})

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

    def _scan_one(self, pid: int) -> None:
        try:
            result = self.scanner.scan(pid)
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
        if proc is None:
            if not result.providers:
                return
            proc = self.processes[pid] = TracedProcess(pid, result.started)
        present = {inst.key: inst for inst in result.providers}
        gone = [k for k in proc.attachments if k not in present]
        if gone:
            self.drain(wait=False)  # records from the provider's last moments first
        for key in gone:
            log.info("pid %d: provider %s unloaded; detaching", pid, proc.attachments[key].instance.image.provider)
            att = proc.attachments.pop(key)
            att.close()
            self.programs.unbind(att.cookies)
        for key, inst in present.items():
            if key in proc.attachments or key in proc.failed or key in proc.pending:
                continue
            if proc.resource is None:
                try:
                    proc.resource = process_resource(pid, inst.image.schema.get("runtime"))
                except procfs.ProcessGone:
                    return
            plan = self._plan_for(inst.image)
            if plan.empty:
                proc.failed.add(key)
                self.scanner.warn_once("empty:%d" % id(inst.image),
                                       "provider %s (pid %d) has no probe spanprobe can trace"
                                       % (inst.image.provider, pid))
                continue
            if plan.module.key in self._failed_layouts:
                proc.failed.add(key)
                continue
            module = self.programs.cached(plan.module)
            if module is not None:  # same shapes seen before: attach now, no compile
                self._attach(proc, key, inst, plan, module)
                continue
            proc.pending[key] = self._compiler.submit(self._compile, plan, inst)

    def _plan_for(self, image) -> Plan:
        return self.programs.plan_for(image)

    def _compile(self, plan: Plan, inst):
        """Runs in the compile thread; never raises (the result says what failed)."""
        try:
            return inst, plan, self.programs.module_for(plan.module), None
        except ProgramError as exc:
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
                    self._failed_layouts[plan.module.key] = str(error)
                    self.scanner.warn_once("compile:%s" % plan.module.key, str(error))
                    continue
                self._attach(proc, key, inst, plan, module)

    def _attach(self, proc: TracedProcess, key, inst: ProviderInstance, plan: Plan, module: Module) -> None:
        """Attach every span and point of ``plan`` in ``proc``, each site that emits records with its
        own cookie."""
        decoders = decoders_for(plan)
        att = Attachment(inst, module, [], [])
        work = []  # (probe, handler, decoder; None for span starts, whose handler emits no record)
        for span in plan.spans:
            work.append((span.start, span.shape.start_fn, None))
            work.append((span.end, span.shape.end_fn, decoders[id(span)]))
        for point in plan.points:
            work.append((point.probe, point.shape.fn, decoders[id(point)]))
        try:
            for probe, fn, decoder in work:
                for loc in probe.locations:
                    cookie = 0
                    if decoder is not None:
                        cookie = self.programs.bind(decoder, proc.pid)
                        att.cookies.append(cookie)
                    att.fds.extend(uprobe.attach(inst.attach_path, loc.offset, loc.semaphore, proc.pid,
                                                 module.prog_fds[fn], cookie))
                    att.sites += 1
        except uprobe.AttachError as exc:
            att.close()
            self.programs.unbind(att.cookies)
            proc.failed.add(key)
            if procfs.alive(proc.pid, proc.started):
                self.scanner.warn_once("attach:%d:%s" % (proc.pid, key),
                                       "pid %d: cannot attach to provider %s: %s"
                                       % (proc.pid, inst.image.provider, exc))
            return
        proc.attachments[key] = att
        log.info("pid %d: attached to provider %s (%d probe sites)", proc.pid, inst.image.provider, att.sites)

    def _forget(self, pid: int) -> None:
        """Detach from a process that exited or is no longer a target, after its last records."""
        proc = self.processes.get(pid)
        self.scanner.forget(pid)
        if proc is None:
            return
        self.drain(wait=False)  # its last records, while its cookies still mean something
        modules = set()
        for att in proc.attachments.values():
            att.close()
            self.programs.unbind(att.cookies)
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

    def _on_load(self, load: LoadRecord) -> None:
        """A process stopped itself after dlopen() of a provider: attach, then resume it."""
        pid = load.pid
        self._stopped_by_us.add(pid)
        try:
            if pid in set(self.targets.current()):
                self.scanner.forget(pid)
                self._scan_one(pid)
                self._attach_compiled(wait=True)
        finally:
            self._resume(pid)

    def _resume(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        self._stopped_by_us.discard(pid)

    # --- housekeeping -----------------------------------------------------------------

    def housekeeping(self, now: float) -> None:
        self.clock.maybe_reanchor()
        self.pipeline.submit(self.builder.expire_events())
        self.stats.kernel = self.programs.counters()
        if now >= self._next_reap:
            self._next_reap = now + 60.0
            older = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - int(self.open_span_timeout_s * 1e9)
            for module in self.programs.modules:
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
            time.sleep(self.drain_interval)
        else:
            self.drain()
        now = time.monotonic()
        if now >= self._next_scan:
            self.scan()
            # Rescan as often as scan_interval allows while a scan costs under 2% of a core
            # (a few pids: every 0.25 s); on a host with thousands of processes, less often.
            cost = time.monotonic() - now
            self._next_scan = now + min(max(self.scan_interval, 50 * cost), 2.0)
        else:
            self._attach_compiled()
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + 0.5
            self.housekeeping(now)

    def close(self) -> None:
        """Detach everything, drain the last records, release held events.

        Processes that exited since the last scan are forgotten properly (their
        open spans counted as never ended); spans still open in live processes
        are counted as open at exit.
        """
        self.drain(wait=False)
        for pid, proc in list(self.processes.items()):
            if not procfs.alive(pid, proc.started):
                self._forget(pid)
        try:
            self.stats.open_at_exit = sum(m.open_spans() for m in self.programs.modules)
        except Exception as exc:  # pragma: no cover
            log.debug("counting open spans: %s", exc)
        for proc in list(self.processes.values()):
            for att in proc.attachments.values():
                att.close()
            for future in proc.pending.values():
                future.cancel()
        for pid in list(self._stopped_by_us):
            self._resume(pid)
        self._compiler.shutdown(wait=False, cancel_futures=True)
        self.drain(wait=False)
        self.pipeline.submit(self.builder.expire_events(everything=True))
        self.stats.kernel = self.programs.counters()
        self.stats.processes = 0
