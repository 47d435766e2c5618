"""The console exporter: each trace printed as a tree a person reads, once its root span has ended;
each event (a plain probe hit, an event outside a span) as a line of its own.

Everything printed comes from the traced application (span names, attribute
values, error messages): untrusted text. It goes through text.safe_text, so
an attribute cannot move the cursor, clear the screen or forge a line of
output.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from typing import Dict, IO, List, Sequence, Tuple, Union

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from ..assemble import Span
from ..assemble.telemetry import EncodedSpan, LogEvent

from ..text import format_duration, format_value, safe_text


class ConsoleExporter(SpanExporter):
    """Prints each trace as a tree, once its root span has ended.

    Spans are reported when they end, children first, so a trace is held until
    its root arrives. A trace whose root is not ours (its parent is a span of
    the application's own OpenTelemetry SDK, or another process) is printed
    ``hold_s`` seconds after its last span arrived, with the spans whose
    parent is missing as roots. Bounded: beyond ``max_traces`` held traces the
    oldest is printed as it is.
    """

    def __init__(self, out: IO[str] = None, hold_s: float = 1.0, max_traces: int = 1000,
                 max_attr_len: int = 120):
        self.out = out or sys.stdout
        self.hold_s = hold_s
        self.max_traces = max_traces
        self.max_attr_len = max_attr_len
        self._traces: "OrderedDict[int, Tuple[float, List[Span]]]" = OrderedDict()
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Union[Span, EncodedSpan]]) -> SpanExportResult:
        spans = [s.decoded() if s.__class__ is EncodedSpan else s for s in spans]
        with self._lock:
            now = time.monotonic()
            ready = []
            for span in spans:
                tid = span.context.trace_id
                entry = self._traces.pop(tid, None)
                group = entry[1] if entry else []
                group.append(span)
                if span.parent is None:
                    ready.append(group)
                else:
                    self._traces[tid] = (now, group)
            while len(self._traces) > self.max_traces:
                ready.append(self._traces.popitem(last=False)[1][1])
            ready.extend(self._expire(now))
            self._print(ready)
        return SpanExportResult.SUCCESS

    def export_events(self, events: Sequence[LogEvent]) -> SpanExportResult:
        """A line per event (plain probe hit, event outside a span), printed at once."""
        if events:
            with self._lock:
                self.out.write("".join(self.render_event(e) + "\n" for e in events))
                self.out.flush()
        return SpanExportResult.SUCCESS

    def render_event(self, event: LogEvent) -> str:
        res = event.resource.attributes if event.resource else {}
        text = "event %s  %s pid %s" % (safe_text(event.event_name), safe_text(str(res.get("service.name", "?"))),
                                       res.get("process.pid", "?"))
        if event.span_id:
            text += "  in span %016x of trace %032x" % (event.span_id, event.trace_id)
        return text + self._attrs({k: v for k, v in event.attributes.items() if k != "event.name"})

    def _expire(self, now: float) -> List[List[Span]]:
        out = []
        for tid in [t for t, (seen, _) in self._traces.items() if now - seen >= self.hold_s]:
            out.append(self._traces.pop(tid)[1])
        return out

    def tick(self) -> None:
        """Print traces whose root never came (called periodically)."""
        with self._lock:
            self._print(self._expire(time.monotonic()))

    def _print(self, groups: List[List[Span]]) -> None:
        if not groups:
            return
        lines: List[str] = []
        for group in groups:
            lines.extend(self.render_trace(group))
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()

    def render_trace(self, spans: List[Span]) -> List[str]:
        by_id = {s.context.span_id: s for s in spans}
        children: Dict[int, List[Span]] = {}
        roots = []
        for s in spans:
            if s.parent is not None and s.parent.span_id in by_id:
                children.setdefault(s.parent.span_id, []).append(s)
            else:
                roots.append(s)
        roots.sort(key=lambda s: s.start_time or 0)
        first = roots[0]
        res = first.resource.attributes if first.resource else {}
        head = "trace %032x  %s pid %s" % (first.context.trace_id, safe_text(str(res.get("service.name", "?"))),
                                         res.get("process.pid", "?"))
        if first.parent is not None:
            head += "  (joins parent span %016x)" % first.parent.span_id
        lines = [head]

        def walk(span: Span, prefix: str, last: bool):
            branch = "└─ " if last else "├─ "
            lines.append(prefix + branch + self.render_span(span))
            child_prefix = prefix + ("   " if last else "│  ")
            items: List[tuple] = [(e.timestamp or 0, "event", e) for e in span.events]
            items += [(c.start_time or 0, "span", c) for c in children.get(span.context.span_id, [])]
            items.sort(key=lambda item: item[0])
            for i, (_, kind, item) in enumerate(items):
                is_last = i == len(items) - 1
                if kind == "span":
                    walk(item, child_prefix, is_last)
                else:
                    offset = (item.timestamp or 0) - (span.start_time or 0)
                    lines.append(child_prefix + ("└─ " if is_last else "├─ ") + "• %s +%s%s" % (
                        safe_text(item.name), format_duration(max(offset, 0)), self._attrs(item.attributes)))

        for i, root in enumerate(roots):
            walk(root, "", i == len(roots) - 1)
        return lines

    def _attrs(self, attributes) -> str:
        if not attributes:
            return ""
        shown = [k for k in attributes if not k.startswith(("code.", "thread.id"))]
        if not shown:
            return ""
        return "  " + " ".join("%s=%s" % (safe_text(k), format_value(attributes[k], self.max_attr_len))
                               for k in shown)

    def render_span(self, span: Span) -> str:
        duration = (span.end_time or 0) - (span.start_time or 0)
        kind = span.kind.name.lower()
        text = "%s [%s] %s" % (safe_text(span.name), kind, format_duration(duration))
        if span.status.status_code == StatusCode.ERROR:
            text += "  ERROR"
            if span.status.description:
                text += " " + safe_text(span.status.description, self.max_attr_len)
        attrs = {k: v for k, v in (span.attributes or {}).items() if k != "error.type"}
        return text + self._attrs(attrs)

    def shutdown(self) -> None:
        with self._lock:
            groups = [g for _, g in self._traces.values()]
            self._traces.clear()
            self._print(groups)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
