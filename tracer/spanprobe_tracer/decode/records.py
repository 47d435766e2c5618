"""What the BPF side reports, decoded: finished spans, events, plain probe hits.

These are plain data, one object per ring-buffer record, still in kernel terms
(CLOCK_BOOTTIME nanoseconds, pid, integer ids). assemble.spans turns them into
OpenTelemetry spans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional


# Plain classes with __slots__ (one is built per ring-buffer record); dataclass
# writes their __init__. eq=False and repr=False keep object identity and the
# default repr, as before; slots are listed by hand because dataclass(slots=True)
# needs Python 3.10.

@dataclass(eq=False, repr=False)
class SpanRecord:
    """One finished span: the start probe's and the end probe's arguments, both times."""

    __slots__ = ("span_def", "pid", "tid", "start_tid", "start_ns", "end_ns", "trace_id",
                 "span_id", "parent_id", "trace_flags", "status", "error_type", "error_message",
                 "attributes", "notes")

    span_def: Any
    pid: int
    tid: int
    start_tid: int
    start_ns: int
    end_ns: int
    trace_id: int
    span_id: int
    parent_id: int
    trace_flags: int
    status: int
    error_type: Any
    error_message: Any
    attributes: Dict[str, Any]
    notes: Optional["ValueNotes"]


@dataclass(eq=False, repr=False)
class PointRecord:
    """One event or plain probe hit. ``span_id``/``trace_id`` are 0 for plain probes."""

    __slots__ = ("point_def", "pid", "tid", "ts_ns", "span_id", "trace_id", "trace_flags",
                 "attributes", "notes")

    point_def: Any
    pid: int
    tid: int
    ts_ns: int
    span_id: int
    trace_id: int
    trace_flags: int
    attributes: Dict[str, Any]
    notes: Optional["ValueNotes"]


@dataclass(eq=False, repr=False)
class OtelSpanRecord:
    """One otel_span probe hit: a whole OpenTelemetry span, as the SDK encoded it (an OTLP ScopeSpans).

    ``complete`` is False when the payload did not arrive whole (cut, or unreadable): it cannot
    be decoded then, and is counted instead.
    """

    __slots__ = ("point_def", "pid", "tid", "ts_ns", "payload", "complete")

    point_def: Any
    pid: int
    tid: int
    ts_ns: int
    payload: bytes
    complete: bool


@dataclass
class LoadRecord:
    """A traced process returned from dlopen() of a provider-looking path and is stopped."""

    pid: int
    tid: int


@dataclass
class NameRecord:
    """The text of a string (an HTTP method or route) whose hash keys the kernel's HTTP metrics."""

    hash: int
    text: str


@dataclass
class ValueNotes:
    """Attribute names whose values are not (entirely) what the application passed.

    truncated:          cut at the tracer's capture length, or by the SDK (bytes)
    conversion_failed:  the application could not convert the value (flags bit 8+i);
                        the attribute is omitted
    read_failed:        the tracer could not read it from the process's memory;
                        the attribute is omitted
    """

    truncated: List[str]
    conversion_failed: List[str]
    read_failed: List[str]

    def __bool__(self):
        return bool(self.truncated or self.conversion_failed or self.read_failed)
