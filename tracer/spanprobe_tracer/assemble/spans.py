"""Decoded probe records -> OpenTelemetry SDK ReadableSpans.

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
  or whose span never arrives, becomes a zero-length span of its own, child of
  the span id it named, so it is never dropped silently.
* plain probe              a zero-length span ``<provider>.<probe>`` (kind
  internal, a fresh trace) with the arguments as attributes.
* otel_span probe          the OpenTelemetry API span its payload carries
  (assemble.otel), with the process's resource.

Values the probe could not deliver are surfaced, never invented: an attribute
the application failed to convert, or the tracer failed to read, is omitted
and named in ``spanprobe.conversion_failed`` / ``spanprobe.read_failed``; a
value cut at the capture length is named in ``spanprobe.truncated``.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from spanprobe.abi.protocol import (ROLE_EVENT, SPAN_KINDS, STATUS_CANCELLED, STATUS_ERROR, STATUS_OK,
                                    STATUS_SET_ERROR, STATUS_SET_OK)

from ..decode import OtelSpanRecord, PointRecord, SpanRecord, ValueNotes
from .otel import OtelSpanReader

KINDS = {kind: SpanKind[kind.upper()] for kind in SPAN_KINDS}
_UNSET = Status(StatusCode.UNSET)
_OK = Status(StatusCode.OK)
_FLAGS = [TraceFlags(i) for i in range(256)]
_rng = random.SystemRandom()


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
    """Turns records into ReadableSpans; holds events until their span arrives.

    ``resource_for(pid)`` supplies each process's Resource (built while the
    process was alive: spans of a process that has exited are still drained).
    ``to_wall(boot_ns)`` converts kernel timestamps.
    """

    def __init__(self, resource_for: Callable[[int], Resource], to_wall: Callable[[int], int],
                 max_pending_events: int = 10000, event_wait_s: float = 300.0,
                 drop_orphan_events: bool = False):
        self._resource_for = resource_for
        self._to_wall = to_wall
        self._scopes: Dict[str, InstrumentationScope] = {}
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

    def _scope(self, provider: str) -> InstrumentationScope:
        scope = self._scopes.get(provider)
        if scope is None:
            scope = self._scopes[provider] = InstrumentationScope(provider)
        return scope

    # --- spans -------------------------------------------------------------------

    def span(self, rec: SpanRecord) -> ReadableSpan:
        d = rec.span_def
        flags = _FLAGS[rec.trace_flags]
        context = SpanContext(rec.trace_id, rec.span_id, False, flags)
        parent = SpanContext(rec.trace_id, rec.parent_id, False, flags) if rec.parent_id else None
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
        end = self._to_wall(rec.end_ns)
        events: List[Event] = []
        if self._pending:
            pending = self._pending.pop((rec.pid, rec.span_id), None)
            if pending is not None:
                events = [ev for _, ev in pending[1]]
                self._pending_count -= len(events)
        status = _UNSET
        if rec.status == STATUS_ERROR:
            description = ("%s: %s" % (rec.error_type, rec.error_message) if rec.error_message
                           else rec.error_type) or None
            status = Status(StatusCode.ERROR, description)
            if rec.error_type:
                attrs["error.type"] = rec.error_type
            exc_attrs = {"exception.type": rec.error_type or "unknown"}
            if rec.error_message:
                exc_attrs["exception.message"] = rec.error_message
            events.append(Event("exception", exc_attrs, end))
        elif rec.status == STATUS_CANCELLED:
            attrs["spanprobe.cancelled"] = True
        elif rec.status == STATUS_SET_ERROR:
            status = Status(StatusCode.ERROR, rec.error_message or None)
        elif rec.status == STATUS_SET_OK:
            status = _OK
        elif rec.status != STATUS_OK:
            status = Status(StatusCode.ERROR, "unknown span status %d reported by the probe" % rec.status)
        return ReadableSpan(
            name=d.name, context=context, parent=parent, resource=self._resource_for(rec.pid),
            attributes=attrs, events=events, kind=KINDS.get(d.kind, SpanKind.INTERNAL), status=status,
            start_time=self._to_wall(rec.start_ns), end_time=end,
            instrumentation_scope=self._scope(d.provider))

    def otel_span(self, rec: OtelSpanRecord) -> ReadableSpan:
        """The OpenTelemetry API span an otel_span record carries; raises otel.BadPayload."""
        return self._otel.span(rec)

    # --- events and plain probes ----------------------------------------------------

    def point(self, rec: PointRecord) -> Optional[ReadableSpan]:
        """A plain probe's span at once; an event is held for its span (None returned)."""
        p = rec.point_def
        if p.role == ROLE_EVENT and rec.span_id:
            attrs = rec.attributes
            _note_attributes(rec.notes, attrs)
            key = (rec.pid, rec.span_id)
            entry = self._pending.get(key)
            if entry is None:
                entry = self._pending[key] = (time.monotonic(), [])
            entry[1].append((rec, Event(p.name, attrs, self._to_wall(rec.ts_ns))))
            self._pending_count += 1
            return None
        return self._zero_length(rec)

    def _zero_length(self, rec: PointRecord) -> ReadableSpan:
        p = rec.point_def
        attrs: Dict[str, object] = dict(rec.attributes)
        attrs["thread.id"] = rec.tid
        _note_attributes(rec.notes, attrs)
        trace_id = rec.trace_id or _rng.getrandbits(128) or 1
        flags = _FLAGS[rec.trace_flags if rec.trace_id else TraceFlags.SAMPLED]
        parent = SpanContext(trace_id, rec.span_id, False, flags) if rec.span_id else None
        if p.role == ROLE_EVENT:
            attrs["spanprobe.event"] = True
        ts = self._to_wall(rec.ts_ns)
        return ReadableSpan(
            name=p.name, context=SpanContext(trace_id, _rng.getrandbits(64) or 1, False, flags),
            parent=parent, resource=self._resource_for(rec.pid), attributes=attrs,
            kind=SpanKind.INTERNAL, status=_UNSET, start_time=ts, end_time=ts,
            instrumentation_scope=self._scope(p.provider))

    def expire_events(self, pid: Optional[int] = None, everything: bool = False) -> List[ReadableSpan]:
        """Release events whose span did not arrive in time (or of ``pid``, or all).

        Also enforces the buffer bound, oldest first.
        """
        out: List[ReadableSpan] = []
        deadline = time.monotonic() - self.event_wait_s
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
                    out.append(self._zero_length(rec))
        return out

    @property
    def pending_events(self) -> int:
        return self._pending_count
