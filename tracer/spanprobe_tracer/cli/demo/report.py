"""What `spanprobe demo` shows: the spans it kept, as trees, and one line that accounts for them.

The demo's export pipeline feeds a Tee: a Collected exporter that keeps every
span for the trees printed at the end (printing while the progress bar is
drawn would garble both), and, with --otlp-endpoint, the same OTLP exporter
`spanprobe trace` uses. The trees are the console exporter's rendering.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Dict, IO, List, Sequence

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ...assemble import Span
from ...assemble.telemetry import LogEvent
from ...export import ConsoleExporter

REQUEST, FILE_COPY, SEED_PROBE = "http.server.request", "file.copy", "simplehttp.file_transfer"


class Collected(SpanExporter):
    """Keeps every span and event it is given (the demo makes a few dozen)."""

    def __init__(self):
        self.spans: List[Span] = []
        self.events: List[LogEvent] = []
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Span]) -> SpanExportResult:
        with self._lock:
            self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def export_events(self, events: Sequence[LogEvent]) -> SpanExportResult:
        with self._lock:
            self.events.extend(events)
        return SpanExportResult.SUCCESS

    def named(self, name: str) -> List[Span]:
        with self._lock:
            return [s for s in self.spans if s.name == name]

    def events_named(self, name: str) -> List[LogEvent]:
        with self._lock:
            return [e for e in self.events if e.event_name == name]

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Tee(SpanExporter):
    """Every batch to each exporter; a success only if all of them took it."""

    def __init__(self, exporters: Sequence[SpanExporter]):
        self.exporters = list(exporters)

    def export(self, spans: Sequence[Span]) -> SpanExportResult:
        return self._all([e.export(spans) for e in self.exporters])

    def export_events(self, events: Sequence[LogEvent]) -> SpanExportResult:
        return self._all([e.export_events(events) for e in self.exporters])

    @staticmethod
    def _all(results) -> SpanExportResult:
        ok = all(r == SpanExportResult.SUCCESS for r in results)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        for e in self.exporters:
            e.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(e.force_flush(timeout_millis) for e in self.exporters)


@dataclass
class Download:
    path: str
    status: int = 0          # HTTP status, 0 if the request failed
    size: int = 0            # body bytes received
    error: str = ""


def request_traces(spans: Sequence[Span]) -> List[List[Span]]:
    """The traces that hold a request span, in the order the requests began."""
    by_trace: Dict[int, List[Span]] = collections.defaultdict(list)
    for s in spans:
        by_trace[s.context.trace_id].append(s)
    traces = [group for group in by_trace.values() if any(s.name == REQUEST for s in group)]
    return sorted(traces, key=lambda group: min(s.start_time or 0 for s in group))


def print_trees(spans: Sequence[Span], events: Sequence[LogEvent], out: IO[str]) -> None:
    """A tree per request, then the seed's probe hits: the model use, shown whatever else is."""
    console = ConsoleExporter(out=out)
    for group in request_traces(spans):
        out.write("\n".join(console.render_trace(group)) + "\n\n")
    hits = sorted((e for e in events if e.event_name == SEED_PROBE), key=lambda e: e.time)
    if hits:
        # A plain USDT probe carries no span ids: each hit is an OpenTelemetry event, given the ids of
        # the request span it fired in.
        out.write("the seed's file_transfer probe, hit by hit (a plain probe: each is an OpenTelemetry event):\n")
        out.writelines("  %s\n" % console.render_event(e) for e in hits)
        out.write("\n")
    out.flush()


def expected(downloads: Sequence[Download]) -> Dict[str, int]:
    """Spans each name should have: a request span per download, a file copy (and the
    seed's probe) per body sent from a file or listing, which is every 200."""
    ok = sum(d.status == 200 for d in downloads)
    return {REQUEST: sum(d.status != 0 for d in downloads), FILE_COPY: ok, SEED_PROBE: ok}


def missing(collected: Collected, downloads: Sequence[Download]) -> Dict[str, int]:
    """How many spans of each name the tracer has not delivered yet."""
    have = {name: len(collected.named(name)) for name in (REQUEST, FILE_COPY)}
    have[SEED_PROBE] = len(collected.events_named(SEED_PROBE))
    return {name: n - have[name] for name, n in expected(downloads).items() if have[name] < n}


def accounting(downloads: Sequence[Download], collected: Collected, exported: int, lost: int,
               destinations: str, elapsed: float) -> str:
    statuses = collections.Counter(d.status for d in downloads if d.status)
    detail = ", ".join("%d answered %d" % (n, status) for status, n in sorted(statuses.items()))
    failed = sum(1 for d in downloads if not d.status)
    requests = collected.named(REQUEST)
    request_ids = {s.span_id for s in requests}
    request_traces = {s.trace_id for s in requests}
    children = sum(1 for c in collected.named(FILE_COPY) if c.parent_id in request_ids)
    hits = collected.events_named(SEED_PROBE)
    return ("spanprobe demo: %d downloads (%s%s) traced as %d request spans with %d file-copy children, "
            "plus %d hits of the seed's file_transfer probe (events, %d inside their request's trace); %d spans "
            "exported to %s, %d lost, in %.1f s"
            % (len(downloads), detail or "none answered", ", %d failed" % failed if failed else "",
               len(requests), children, len(hits), sum(1 for e in hits if e.trace_id in request_traces),
               exported, destinations, lost, elapsed))
