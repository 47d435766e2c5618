"""The session's span metrics: the kernel's (cookie, status) series named and summed for export.

kernel.metrics counts each end probe site's spans by raw status; here each
cookie is known as the span type (name, kind) of a process, whose resource is
the process's, and statuses become OpenTelemetry status codes (0 ok and 2
cancelled are UNSET, as the spans say: docs/otel-mapping.md). A process or
provider that goes away has its series taken out of the kernel map first
(``retire``): their last numbers are exported once more, then forgotten.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, List, Tuple

from opentelemetry.sdk.resources import Resource

from spanprobe.abi.protocol import STATUS_CANCELLED, STATUS_OK

from ..export.span_metrics import MetricsSender, SeriesPoint
from ..kernel import SpanType
from ..kernel.metrics import MetricsTable, Series

SeriesKey = Tuple[int, str, str, str]   # pid, span name, span kind, status code


def status_code(status: int) -> str:
    return "STATUS_CODE_UNSET" if status in (STATUS_OK, STATUS_CANCELLED) else "STATUS_CODE_ERROR"


class SpanMetrics:
    """Reads the kernel's series every ``interval`` seconds and hands them, named, to ``sender``."""

    def __init__(self, table: MetricsTable, sender: MetricsSender, resource_for: Callable[[int], Resource],
                 interval: float):
        self.table = table
        self.sender = sender
        self._resource_for = resource_for
        self.interval = interval
        self._cookies: Dict[int, Tuple[int, SpanType]] = {}
        self._retired: Dict[SeriesKey, SeriesPoint] = {}
        self._started: Dict[SeriesKey, int] = {}
        self._next = time.monotonic() + interval

    def watch(self, cookies: Dict[int, SpanType], pid: int) -> None:
        """``cookies`` (end probe sites of ``pid``) now count spans of these span types."""
        for cookie, span in cookies.items():
            self._cookies[cookie] = (pid, span)

    def _fold(self, series: Iterable[Series], into: Dict[SeriesKey, SeriesPoint]) -> None:
        for s in series:
            known = self._cookies.get(s.cookie)
            if known is None:
                continue  # a cookie of a provider already retired: nothing left to say
            pid, span = known
            key = (pid, span.name, span.kind, status_code(s.status))
            point = into.get(key)
            if point is None:
                start = self._started.setdefault(key, time.time_ns())
                into[key] = SeriesPoint(self._resource_for(pid), span.name, "SPAN_KIND_" + span.kind.upper(),
                                        key[3], s.count, s.sum_ns, list(s.buckets), start)
            else:
                point.count += s.count
                point.sum_ns += s.sum_ns
                point.buckets = [a + b for a, b in zip(point.buckets, s.buckets)]

    def retire(self, cookies: Iterable[int]) -> None:
        """Their process or provider is going: take their series out of the kernel, keep them for one export."""
        cookies = [c for c in cookies if c in self._cookies]
        if cookies:
            self._fold(self.table.remove(cookies), self._retired)
            for c in cookies:
                del self._cookies[c]

    def points(self) -> List[SeriesPoint]:
        """Every series now: the kernel's, plus what retired since the last call (then forgotten)."""
        current: Dict[SeriesKey, SeriesPoint] = {}
        self._fold(self.table.read(), current)
        for key, point in self._retired.items():
            if key not in current:
                self._started.pop(key, None)  # gone for good after this export
            if key in current:
                current[key].count += point.count
                current[key].sum_ns += point.sum_ns
                current[key].buckets = [a + b for a, b in zip(current[key].buckets, point.buckets)]
            else:
                current[key] = point
        self._retired = {}
        return list(current.values())

    def tick(self, now: float, force: bool = False) -> None:
        if force or now >= self._next:
            self._next = now + self.interval
            self.sender.submit(self.points(), time.time_ns())
