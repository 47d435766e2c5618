"""Decoded probe records -> spans and events (assemble.telemetry.Span, LogEvent) ready to export.

The spans keep the ids the application's probes reported (trace id, span id,
parent span id), so parent links hold and a span joins the application's own
distributed trace when the SDK took its ids from an active OpenTelemetry span.
Times are the kernel's CLOCK_BOOTTIME stamps moved onto the wall clock.

How each kind of record becomes telemetry (docs/tracer.md has the full list):

* span (start+end probes)  one span; kind and code.* attributes from the schema,
  status ERROR with ``error.type`` and an ``exception`` event on failure, UNSET
  with ``spanprobe.cancelled`` on cancellation.
* event probe              an Event on its span (joined by span id in a bounded
  buffer, since the span is reported when it ends). An event outside any span,
  or whose span never arrives, becomes an OpenTelemetry event (a LogEvent: an
  OTLP log record with event.name), with the ids it named, so it is never
  dropped silently.
* plain probe              an OpenTelemetry event ``<provider>.<probe>`` with the
  arguments as attributes, carrying the ids of the span it fired in: the
  innermost span of the same thread open at that moment, found when that span
  ends (the hit waits for it, bounded, like events).
* otel_span probe          the OpenTelemetry API span its payload carries, still
  encoded (assemble.otel: an EncodedSpan), with the process's resource.

Values the probe could not deliver are surfaced, never invented: an attribute
the application failed to convert, or the tracer failed to read, is omitted
and named in ``spanprobe.conversion_failed`` / ``spanprobe.read_failed``; a
value cut at the capture length is named in ``spanprobe.truncated``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode

from spanprobe.abi.protocol import (ROLE_EVENT, SPAN_KINDS, STATUS_CANCELLED, STATUS_ERROR, STATUS_OK,
                                    STATUS_SET_ERROR, STATUS_SET_OK)

from ..decode import OtelSpanRecord, PointRecord, SpanRecord, ValueNotes
from .otel import ApiSpanSummary, OtelSpanReader
from .telemetry import UNSET, EncodedSpan, LogEvent, Span

KINDS = {kind: SpanKind[kind.upper()] for kind in SPAN_KINDS}
_OK = Status(StatusCode.OK)
#: Seconds a plain hit waits before the kernel's open spans are asked whether one can still claim it:
#: a span that ended after the hit may still be in the ring buffer until the next drains.
PLAIN_GRACE_S = 0.5


def _note_attributes(notes: Optional[ValueNotes], attrs: dict) -> None:
    if not notes:
        return
    if notes.truncated:
        attrs["spanprobe.truncated"] = list(notes.truncated)
    if notes.conversion_failed:
        attrs["spanprobe.conversion_failed"] = list(notes.conversion_failed)
    if notes.read_failed:
        attrs["spanprobe.read_failed"] = list(notes.read_failed)


class SpanBuilder:
    """Turns records into Spans; holds events until their span arrives.

    ``resource_for(pid)`` supplies each process's Resource (built while the
    process was alive: spans of a process that has exited are still drained).
    ``to_wall(boot_ns)`` converts kernel timestamps.
    """

    def __init__(self, resource_for: Callable[[int], Resource], to_wall: Callable[[int], int],
                 max_pending_events: int = 10000, event_wait_s: float = 300.0,
                 drop_orphan_events: bool = False):
        #: pid -> its Resource; boot ns -> epoch ns (an offset: export.otlp.records relies on it)
        self.resource_for = resource_for
        self.to_wall = to_wall
        self._scopes: Dict[str, InstrumentationScope] = {}
        #: span type -> (SpanKind, scope), made once per type (bounded: emptied past 4,096 types)
        self._kind_scope: Dict[object, tuple] = {}
        self._otel = OtelSpanReader(resource_for)
        #: (pid, span id) -> (monotonic arrival, [(PointRecord, Event)])
        self._pending: "OrderedDict[Tuple[int, int], Tuple[float, list]]" = OrderedDict()
        self._pending_count = 0
        self.max_pending_events = max_pending_events
        self.event_wait_s = event_wait_s
        #: With a duration threshold, a missing span was filtered on purpose: drop its events too.
        self.drop_orphan_events = drop_orphan_events
        self.orphan_events = 0
        self.dropped_orphan_events = 0
        #: (pid, tid) -> [(monotonic arrival, PointRecord)]: plain hits waiting for the span they fired in
        self._plain: Dict[Tuple[int, int], list] = {}
        self._plain_count = 0
        self._events_out: List[LogEvent] = []

    def _scope(self, provider: str) -> InstrumentationScope:
        scope = self._scopes.get(provider)
        if scope is None:
            scope = self._scopes[provider] = InstrumentationScope(provider)
        return scope

    # --- spans -------------------------------------------------------------------

    def span(self, rec: SpanRecord) -> Span:
        d = rec.span_def
        code = d.code_attributes
        # Decoded values are already OpenTelemetry-ready (decode.values).
        if code:
            attrs: Dict[str, object] = dict(code)
            attrs.update(rec.attributes)
        else:
            attrs = rec.attributes
        attrs["thread.id"] = rec.start_tid
        if rec.notes:
            _note_attributes(rec.notes, attrs)
        end = self.to_wall(rec.end_ns)
        events: List[Event] = []
        if self._pending:
            pending = self._pending.pop((rec.pid, rec.span_id), None)
            if pending is not None:
                events = [ev for _, ev in pending[1]]
                self._pending_count -= len(events)
        status = UNSET
        if rec.status != STATUS_OK:
            status = self._status(rec, attrs, events, end)
        kind_scope = self._kind_scope.get(d) or self.kind_scope(d)
        span = Span(d.name, rec.trace_id, rec.span_id, rec.parent_id, rec.trace_flags, kind_scope[0],
                    self.to_wall(rec.start_ns), end, attrs, events, status, self.resource_for(rec.pid),
                    kind_scope[1])
        if self._plain:
            self._claim_plain(rec, span)
        return span

    def kind_scope(self, span_def) -> Tuple[SpanKind, InstrumentationScope]:
        """A span type's SpanKind and InstrumentationScope (its provider's), made once per type."""
        kind_scope = self._kind_scope.get(span_def)
        if kind_scope is None:
            if len(self._kind_scope) >= 4096:
                self._kind_scope.clear()
            kind_scope = self._kind_scope[span_def] = (KINDS.get(span_def.kind, SpanKind.INTERNAL),
                                                       self._scope(span_def.provider))
        return kind_scope

    def waits_for(self, pid: int, span_id: int, tid: int) -> bool:
        """Is anything held for this span: events naming it, plain hits of the thread it started on?
        (Such a span must be built here, to take them.)"""
        return bool(self._pending or self._plain) and (
            (pid, span_id) in self._pending or (pid, tid) in self._plain)

    @staticmethod
    def _status(rec: SpanRecord, attrs: dict, events: list, end: int) -> Status:
        """A failed or cancelled span's status; its error.type and exception event, or spanprobe.cancelled."""
        if rec.status == STATUS_ERROR:
            description = ("%s: %s" % (rec.error_type, rec.error_message) if rec.error_message
                           else rec.error_type) or None
            if rec.error_type:
                attrs["error.type"] = rec.error_type
            exc_attrs = {"exception.type": rec.error_type or "unknown"}
            if rec.error_message:
                exc_attrs["exception.message"] = rec.error_message
            events.append(Event("exception", exc_attrs, end))
            return Status(StatusCode.ERROR, description)
        if rec.status == STATUS_CANCELLED:
            attrs["spanprobe.cancelled"] = True
            return UNSET
        if rec.status == STATUS_SET_ERROR:
            return Status(StatusCode.ERROR, rec.error_message or None)
        if rec.status == STATUS_SET_OK:
            return _OK
        return Status(StatusCode.ERROR, "unknown span status %d reported by the probe" % rec.status)

    def observe_api_spans(self, observe: Callable[[ApiSpanSummary], None]) -> None:
        """Hand ``observe`` a summary of every OpenTelemetry API span read (span metrics)."""
        self._otel.observe = observe

    def otel_span(self, rec: OtelSpanRecord) -> EncodedSpan:
        """The OpenTelemetry API span an otel_span record carries, still encoded; raises otel.BadPayload."""
        return self._otel.span(rec)

    # --- events and plain probes ----------------------------------------------------

    def point(self, rec: PointRecord) -> None:
        """Hold a hit: an event for its span, a plain probe hit for the span it may have fired in.

        An event outside any span (span id 0) is an OpenTelemetry event at once
        (``take_events``).
        """
        p = rec.point_def
        if p.role == ROLE_EVENT:
            if not rec.span_id:
                self._events_out.append(self._log_event(rec, 0, 0, 0))
                return
            attrs = rec.attributes
            _note_attributes(rec.notes, attrs)
            key = (rec.pid, rec.span_id)
            entry = self._pending.get(key)
            if entry is None:
                entry = self._pending[key] = (time.monotonic(), [])
            entry[1].append((rec, Event(p.name, attrs, self.to_wall(rec.ts_ns))))
            self._pending_count += 1
            return
        # A plain probe carries no span ids: the span it fired in is the innermost span
        # of its thread open at that moment, known when that span ends (spans arrive
        # innermost first).
        key = (rec.pid, rec.tid)
        held = self._plain.get(key)
        if held is None:
            held = self._plain[key] = []
        held.append((time.monotonic(), rec))
        self._plain_count += 1

    def _claim_plain(self, rec: SpanRecord, span: Span) -> None:
        """Release the held plain hits of ``span``'s thread that fired while it was open, with its ids."""
        held = self._plain.get((rec.pid, rec.start_tid))
        if not held:
            return
        keep = []
        for item in held:
            hit = item[1]
            if rec.start_ns <= hit.ts_ns <= rec.end_ns:
                self._events_out.append(self._log_event(hit, span.trace_id, span.span_id, span.trace_flags))
            else:
                keep.append(item)
        self._plain_count -= len(held) - len(keep)
        if keep:
            self._plain[(rec.pid, rec.start_tid)] = keep
        else:
            del self._plain[(rec.pid, rec.start_tid)]

    def _log_event(self, rec: PointRecord, trace_id: int, span_id: int, flags: int) -> LogEvent:
        p = rec.point_def
        attrs: Dict[str, object] = {"event.name": p.name}
        attrs.update(rec.attributes)
        attrs["thread.id"] = rec.tid
        _note_attributes(rec.notes, attrs)
        return LogEvent(p.name, self.to_wall(rec.ts_ns), trace_id, span_id, flags, attrs,
                        self.resource_for(rec.pid), self._scope(p.provider))

    def take_events(self) -> List[LogEvent]:
        """The OpenTelemetry events released since the last call."""
        out, self._events_out = self._events_out, []
        return out

    def expire_events(self, pid: Optional[int] = None, everything: bool = False,
                      open_starts: Optional[Callable[[], Dict[Tuple[int, int], int]]] = None) -> List[LogEvent]:
        """Release what waited long enough (or of ``pid``, or all), as OpenTelemetry events.

        An event whose span did not arrive in time keeps the ids it named. A
        plain hit goes without ids once no span can claim it any more: after
        ``event_wait_s``, or, after a short grace for span records in flight,
        once ``open_starts()`` ((pid, tid) -> earliest start of a span open on
        that thread, read from the kernel) shows no span of its thread open
        since before it fired. Also enforces the buffers' bounds, oldest first.
        """
        now = time.monotonic()
        deadline = now - self.event_wait_s
        doomed = []
        over = self._pending_count - self.max_pending_events
        for key, (arrived, items) in self._pending.items():
            if everything or (pid is not None and key[0] == pid) or arrived < deadline or over > 0:
                doomed.append(key)
                over -= len(items)
            elif pid is None and over <= 0:
                break  # ordered by arrival: the rest are younger
        for key in doomed:
            _, items = self._pending.pop(key)
            self._pending_count -= len(items)
            for rec, _event in items:
                if self.drop_orphan_events:
                    self.dropped_orphan_events += 1
                else:
                    self.orphan_events += 1
                    self._events_out.append(self._log_event(rec, rec.trace_id, rec.span_id, rec.trace_flags))
        if self._plain:
            self._expire_plain(now, pid, everything, open_starts)
        return self.take_events()

    def _expire_plain(self, now: float, pid: Optional[int], everything: bool,
                      open_starts: Optional[Callable[[], Dict[Tuple[int, int], int]]]) -> None:
        settled = now - PLAIN_GRACE_S
        starts = None
        over = self._plain_count - self.max_pending_events
        for key in list(self._plain):
            held = self._plain[key]
            keep = []
            for item in held:
                arrived, hit = item
                release = everything or key[0] == pid or arrived < now - self.event_wait_s or over > 0
                if not release and arrived < settled and open_starts is not None:
                    if starts is None:
                        starts = open_starts()
                    opened = starts.get(key)
                    release = opened is None or opened > hit.ts_ns
                if release:
                    over -= 1
                    self._events_out.append(self._log_event(hit, 0, 0, 0))
                else:
                    keep.append(item)
            self._plain_count -= len(held) - len(keep)
            if keep:
                self._plain[key] = keep
            else:
                del self._plain[key]

    @property
    def pending_events(self) -> int:
        return self._pending_count + self._plain_count
