"""Between span building and the exporter: a bounded queue and one export thread.

The tracer's main loop must keep draining the ring buffer whatever the
collector does, so it never waits on export: ``submit`` appends to a bounded
queue and, when the queue is full, drops the spans and counts them. The export
thread sends batches; the OTLP exporter retries transient failures with
exponential backoff within its timeout, and a batch that still fails is
dropped and counted, so a collector that is down costs bounded memory and no
hang. ``shutdown`` flushes what is queued within a deadline, then aborts the
exporter's retries and counts what is left.

Spans and events (LogEvents: OpenTelemetry events, OTLP log records) share the
queue; a batch goes to the exporter's ``export`` (spans) and ``export_events``
(events), and each kind is counted apart (``exported`` / ``events_exported``,
``drop`` / ``drop_events``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Deque, List, Protocol, Sequence, Union

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ..assemble import Span
from ..assemble.telemetry import LogEvent

log = logging.getLogger("spanprobe.tracer")


class Accounting(Protocol):
    """Where the pipeline counts what it exported and what it dropped, by reason ("queue_full",
    "export_failed", "shutdown"), spans and events apart: the session's Stats."""

    def add(self, name: str, n: int = 1) -> None: ...

    def drop(self, reason: str, n: int) -> None: ...

    def drop_events(self, reason: str, n: int) -> None: ...


def _split(items) -> tuple:
    """(spans, events) of a list holding both."""
    events = [x for x in items if x.__class__ is LogEvent]
    if not events:
        return items, events
    return [x for x in items if x.__class__ is not LogEvent], events


class ExportPipeline:
    def __init__(self, exporter: SpanExporter, stats: Accounting, max_queue: int = 65536,
                 batch_size: int = 1024, linger_s: float = 0.2):
        self.exporter = exporter
        self.stats = stats
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.linger_s = linger_s
        self._queue: Deque[Union[Span, LogEvent]] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self._failures_logged = 0
        self._thread = threading.Thread(target=self._run, name="spanprobe-export", daemon=True)
        self._thread.start()

    def _count_dropped(self, reason: str, items: Sequence) -> None:
        spans, events = _split(items)
        if spans:
            self.stats.drop(reason, len(spans))
        if events:
            self.stats.drop_events(reason, len(events))

    def submit(self, items: List[Union[Span, LogEvent]]) -> None:
        """Queue spans and events for export; what the queue has no room for is dropped and counted."""
        if not items:
            return
        with self._cond:
            if self._closing:
                self._count_dropped("shutdown", items)
                return
            room = self.max_queue - len(self._queue)
            if room < len(items):
                self._count_dropped("queue_full", items[max(room, 0):])
                items = items[:max(room, 0)]
            self._queue.extend(items)
            if len(self._queue) >= self.batch_size:
                self._cond.notify()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _take(self) -> List[Union[Span, LogEvent]]:
        with self._cond:
            deadline = time.monotonic() + self.linger_s
            while len(self._queue) < self.batch_size and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            n = min(len(self._queue), self.batch_size)
            batch = [self._queue.popleft() for _ in range(n)]
            self._busy = bool(batch)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                with self._cond:
                    self._busy = False
                    if self._closing and not self._queue:
                        self._cond.notify_all()
                        return
                continue
            spans, events = _split(batch)
            if spans:
                self._export(self.exporter.export, spans, "exported", self.stats.drop, "spans")
            if events:
                self._export(self.exporter.export_events, events, "events_exported", self.stats.drop_events,
                             "events")
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _export(self, export, items: list, exported: str, drop, what: str) -> None:
        try:
            result = export(items)
        except Exception as exc:  # an exporter bug must not kill the thread
            log.error("exporter raised %s: %s", type(exc).__name__, exc)
            result = SpanExportResult.FAILURE
        if result == SpanExportResult.SUCCESS:
            self.stats.add(exported, len(items))
            return
        drop("export_failed", len(items))
        self._failures_logged += 1
        if self._failures_logged in (1, 10, 100) or self._failures_logged % 1000 == 0:
            log.warning("export of %d %s failed (%d failed batches so far); they are counted as lost",
                        len(items), what, self._failures_logged)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far has been handed to the exporter."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while self._queue or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def shutdown(self, timeout: float = 10.0) -> None:
        """Export what is queued within ``timeout`` seconds, then stop; count what is left."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(max(deadline - time.monotonic(), 0))
        if self._thread.is_alive():
            # The exporter is stuck retrying a dead collector: its shutdown aborts the retries.
            try:
                self.exporter.shutdown()
            except Exception:  # pragma: no cover
                pass
            self._thread.join(2.0)
            with self._cond:
                left = list(self._queue)
                self._queue.clear()
            if left:
                self._count_dropped("shutdown", left)
        else:
            try:
                self.exporter.shutdown()
            except Exception:  # pragma: no cover
                pass
