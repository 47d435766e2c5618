"""A tracing session: which processes, attach and detach, drain, build, hand to the exporter.

The loop (one thread; compiles and exports run beside it):

1. wait up to ``drain_interval`` on the ring buffer (only dlopen notifications
   wake it early; probe records never do), then consume every record;
2. decode records into spans and hand them to the export pipeline;
3. every ``scan_interval``: list the target processes, rescan the ones whose
   memory map changed, compile modules for new provider layouts (in a worker
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
from .launcher import Launched, watch_dlopen
from .pipeline import ExportPipeline
from .program import Counter, Module, ProgramError, Programs
from .records import LoadRecord, PointRecord, SpanRecord
from .resource import process_resource
from .spans import SpanBuilder
from .stats import Stats

log = logging.getLogger("spanprobe.tracer")


@dataclass
class Attachment:
    """One provider attached in one process: the perf event fds that hold its uprobes."""

    instance: ProviderInstance
    module: Module
    fds: List[int]

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
        self._compiler = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spanprobe-compile")
        self._failed_layouts: Dict[str, str] = {}
        self._stopped_by_us: Set[int] = set()
        self._next_scan = 0.0
        self._next_housekeeping = 0.0
        self._next_reap = time.monotonic() + 60.0
        self._next_status = time.monotonic() + status_interval if status_interval else float("inf")
        self.stop_event = threading.Event()
        self._string_at = ctypes.string_at
        self._ring = programs.core.get_table("sp_events")
        self._ring.open_ring_buffer(self._on_record)

    # --- ring buffer ---------------------------------------------------------------

    def _on_record(self, _ctx, data, size):
        self._raw.append(self._string_at(data, size))
        return 0

    def drain(self, wait: bool = True) -> None:
        """Collect every record in the ring buffer and turn it into spans."""
        core = self.programs.core
        if wait:
            core.ring_buffer_poll(int(self.drain_interval * 1000))
        core.ring_buffer_consume()
        raw, self._raw = self._raw, []
        if raw:
            self._process(raw)

    def _process(self, raw: List[bytes]) -> None:
        decode = self.programs.decode
        builder = self.builder
        out = []
        loads = []
        spans_received = points_received = errors = 0
        for rec in raw:
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
        if gone:
            self.drain(wait=False)  # their last records first
            for pid in gone:
                self._forget(pid)
        for pid in current:
            self._scan_one(pid)
        self._attach_compiled()
        self.stats.processes = sum(1 for p in self.processes.values() if p.attachments)
        self.stats.probes = sum(len(a.fds) for p in self.processes.values() for a in p.attachments.values())

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
        for key in [k for k in proc.attachments if k not in present]:
            log.debug("pid %d: provider %s unloaded; detaching", pid, proc.attachments[key].instance.image.provider)
            proc.attachments.pop(key).close()
        for key, inst in present.items():
            if key in proc.attachments or key in proc.failed or key in proc.pending:
                continue
            if proc.resource is None:
                try:
                    proc.resource = process_resource(pid, inst.image.schema.get("runtime"))
                except procfs.ProcessGone:
                    return
            layout = self.programs.layout_for(inst.image)
            if layout.empty:
                proc.failed.add(key)
                self.scanner.warn_once("empty:%s" % layout.key,
                                       "provider %s (pid %d) has no probe spanprobe can trace"
                                       % (inst.image.provider, pid))
                continue
            if layout.key in self._failed_layouts:
                proc.failed.add(key)
                continue
            proc.pending[key] = self._compiler.submit(self._compile, layout, inst)

    def _compile(self, layout, inst):
        """Runs in the compile thread; never raises (the result says what failed)."""
        try:
            return inst, layout, self.programs.module_for(layout), None
        except ProgramError as exc:
            return inst, layout, None, exc

    def _attach_compiled(self, wait: bool = False) -> None:
        for proc in list(self.processes.values()):
            for key, future in list(proc.pending.items()):
                if not future.done() and not wait:
                    continue
                del proc.pending[key]
                if future.cancelled():
                    continue
                inst, layout, module, error = future.result()
                if error is not None:
                    proc.failed.add(key)
                    self._failed_layouts[layout.key] = str(error)
                    self.scanner.warn_once("compile:%s" % layout.key, str(error))
                    continue
                self._attach(proc, key, inst, module)

    def _attach(self, proc: TracedProcess, key, inst: ProviderInstance, module: Module) -> None:
        fds: List[int] = []
        try:
            for probe, prog_fd in module.prog_fds.items():
                for loc in inst.image.probes[probe].locations:
                    fds.append(uprobe.attach(inst.attach_path, loc.offset, loc.semaphore, proc.pid, prog_fd))
        except uprobe.AttachError as exc:
            for fd in fds:
                os.close(fd)
            proc.failed.add(key)
            if procfs.alive(proc.pid, proc.started):
                self.scanner.warn_once("attach:%d:%s" % (proc.pid, key),
                                       "pid %d: cannot attach to provider %s: %s"
                                       % (proc.pid, inst.image.provider, exc))
            return
        proc.attachments[key] = Attachment(inst, module, fds)
        log.info("pid %d: attached to provider %s (%d probe sites)", proc.pid, inst.image.provider, len(fds))

    def _forget(self, pid: int) -> None:
        proc = self.processes.pop(pid, None)
        self.scanner.forget(pid)
        if proc is None:
            return
        modules = set()
        for att in proc.attachments.values():
            att.close()
            modules.add(att.module)
        for future in proc.pending.values():
            future.cancel()
        if not procfs.alive(pid, proc.started):
            for module in modules:
                try:
                    self.stats.unmatched_exited += module.reap(pid)
                except Exception as exc:  # pragma: no cover
                    log.debug("reaping pid %d: %s", pid, exc)
        # Its resource is still needed for the events released now.
        self.processes[pid] = proc
        try:
            self.pipeline.submit(self.builder.expire_events(pid=pid))
        finally:
            if self.processes.get(pid) is proc:
                del self.processes[pid]

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
        self.drain()
        now = time.monotonic()
        if now >= self._next_scan:
            self._next_scan = now + self.scan_interval
            self.scan()
        else:
            self._attach_compiled()
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + 0.5
            self.housekeeping(now)

    def run(self, until: Optional[Callable[[], bool]] = None, deadline: Optional[float] = None) -> None:
        """Loop until stop_event, ``until()`` or the monotonic ``deadline``."""
        while not self.stop_event.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if until is not None and until():
                break
            self.step()

    def close(self) -> None:
        """Detach everything, drain the last records, release held events."""
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
