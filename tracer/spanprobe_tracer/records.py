"""What the BPF side reports, decoded: finished spans, events, plain probe hits.

These are plain data, one object per ring-buffer record, still in kernel terms
(CLOCK_BOOTTIME nanoseconds, pid, integer ids). spans.py turns them into
OpenTelemetry spans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional


class SpanRecord:
    """One finished span: the start probe's and the end probe's arguments, both times."""

    __slots__ = ("span_def", "pid", "tid", "start_tid", "start_ns", "end_ns", "trace_id",
                 "span_id", "parent_id", "trace_flags", "status", "error_type", "error_message",
                 "attributes", "notes")

    def __init__(self, span_def, pid, tid, start_tid, start_ns, end_ns, trace_id, span_id,
                 parent_id, trace_flags, status, error_type, error_message, attributes, notes):
        self.span_def = span_def
        self.pid = pid
        self.tid = tid
        self.start_tid = start_tid
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.trace_flags = trace_flags
        self.status = status
        self.error_type = error_type
        self.error_message = error_message
        self.attributes: Dict[str, Any] = attributes
        self.notes: Optional["ValueNotes"] = notes


class PointRecord:
    """One event or plain probe hit. ``span_id``/``trace_id`` are 0 for plain probes."""

    __slots__ = ("point_def", "pid", "tid", "ts_ns", "span_id", "trace_id", "trace_flags",
                 "attributes", "notes")

    def __init__(self, point_def, pid, tid, ts_ns, span_id, trace_id, trace_flags, attributes, notes):
        self.point_def = point_def
        self.pid = pid
        self.tid = tid
        self.ts_ns = ts_ns
        self.span_id = span_id
        self.trace_id = trace_id
        self.trace_flags = trace_flags
        self.attributes: Dict[str, Any] = attributes
        self.notes: Optional["ValueNotes"] = notes


@dataclass
class LoadRecord:
    """A traced process returned from dlopen() of a provider-looking path and is stopped."""

    pid: int
    tid: int


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
