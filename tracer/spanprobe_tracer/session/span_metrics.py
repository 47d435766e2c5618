"""The session's span metrics: the kernel's series named and summed for export.

kernel.metrics counts each end probe site's spans by raw status (sp_metrics)
and, for HTTP server spans, by the hashes of method and route and the status
code (sp_http). Here each cookie is known as the span type (name, kind) of a
process, whose resource is the process's; statuses become OpenTelemetry status
codes (0 ok and 2 cancelled are UNSET, as the spans say: docs/otel-mapping.md);
hashes become the strings the kernel sent in name records (session.drain).
An HTTP series whose names have not arrived yet is left out of that export and
counted (``unnamed``); being cumulative, it is whole in the next one that has
them. A process or provider that goes away has its series taken out of the
kernel maps first (``retire``): their last numbers are exported once more,
then forgotten.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, List, Tuple

from opentelemetry.sdk.resources import Resource

from spanprobe.abi.protocol import STATUS_CANCELLED, STATUS_OK

from ..export.span_metrics import MetricsSender, SeriesPoint
from ..kernel import SpanType
from ..kernel.metrics import HTTP_METHOD, HTTP_ROUTE, HTTP_STATUS, MetricsTable, Series

#: (metric, pid, attributes): one exported series.
SeriesKey = Tuple[str, int, Tuple[Tuple[str, object], ...]]
SPANS, HTTP = "spans", "http"


def status_code(status: int) -> str:
    return "STATUS_CODE_UNSET" if status in (STATUS_OK, STATUS_CANCELLED) else "STATUS_CODE_ERROR"


class SpanMetrics:
    """Reads the kernel's series every ``interval`` seconds and hands them, named, to ``sender``."""

    def __init__(self, table: MetricsTable, sender: MetricsSender, resource_for: Callable[[int], Resource],
                 interval: float, names: Dict[int, str]):
        self.table = table
        self.sender = sender
        self._resource_for = resource_for
        self.interval = interval
        #: HTTP method and route texts by hash, as the drainer receives them.
        self.names = names
        #: HTTP series left out of the last export because a name had not arrived.
        self.unnamed = 0
        self._cookies: Dict[int, Tuple[int, SpanType]] = {}
        self._retired: Dict[SeriesKey, SeriesPoint] = {}
        self._started: Dict[SeriesKey, int] = {}
        self._next = time.monotonic() + interval

    def watch(self, cookies: Dict[int, SpanType], pid: int) -> None:
        """``cookies`` (end probe sites of ``pid``) now count spans of these span types."""
        for cookie, span in cookies.items():
            self._cookies[cookie] = (pid, span)

    def _attributes(self, metric: str, span: SpanType, s: Series):
        """The data point attributes of series ``s`` (None: a name it needs has not arrived)."""
        if metric == SPANS:
            return (("span.name", span.name), ("span.kind", "SPAN_KIND_" + span.kind.upper()),
                    ("status.code", status_code(s.status)))
        http = span.shape.http
        attrs = [(HTTP_METHOD, self.names.get(s.method))]
        if http.route >= 0:
            attrs.append((HTTP_ROUTE, self.names.get(s.route)))
        if any(v is None for _, v in attrs):
            return None
        if http.status >= 0:
            attrs.append((HTTP_STATUS, s.status))
        return tuple(attrs)

    def _fold(self, metric: str, series: Iterable[Series], into: Dict[SeriesKey, SeriesPoint]) -> None:
        for s in series:
            known = self._cookies.get(s.cookie)
            if known is None:
                continue  # a cookie of a provider already retired: nothing left to say
            pid, span = known
            attrs = self._attributes(metric, span, s)
            if attrs is None:
                self.unnamed += 1
                continue
            key = (metric, pid, attrs)
            point = into.get(key)
            if point is None:
                resource = self._resource_for(pid)
                if metric == SPANS:  # the spanmetrics connector's dimension
                    attrs = (("service.name", str(resource.attributes.get("service.name", "unknown_service"))),
                             *attrs)
                into[key] = SeriesPoint(resource, attrs, s.count, s.sum_ns, list(s.buckets),
                                        self._started.setdefault(key, time.time_ns()))
            else:
                point.add(s.count, s.sum_ns, s.buckets)

    def retire(self, cookies: Iterable[int]) -> None:
        """Their process or provider is going: take their series out of the kernel, keep them for one export."""
        cookies = [c for c in cookies if c in self._cookies]
        if cookies:
            spans, http = self.table.remove(cookies)
            self._fold(SPANS, spans, self._retired)
            self._fold(HTTP, http, self._retired)
            for c in cookies:
                del self._cookies[c]

    def points(self) -> Tuple[List[SeriesPoint], List[SeriesPoint]]:
        """Every series now, span metrics and HTTP: the kernel's, plus what retired since the last call (then
        forgotten)."""
        self.unnamed = 0
        current: Dict[SeriesKey, SeriesPoint] = {}
        self._fold(SPANS, self.table.read(), current)
        self._fold(HTTP, self.table.read_http(), current)
        for key, point in self._retired.items():
            if key in current:
                current[key].add(point.count, point.sum_ns, point.buckets)
            else:
                self._started.pop(key, None)  # gone for good after this export
                current[key] = point
        self._retired = {}
        return ([p for k, p in current.items() if k[0] == SPANS], [p for k, p in current.items() if k[0] == HTTP])

    def tick(self, now: float, force: bool = False) -> None:
        if force or now >= self._next:
            self._next = now + self.interval
            spans, http = self.points()
            self.sender.submit(spans, http, time.time_ns())
