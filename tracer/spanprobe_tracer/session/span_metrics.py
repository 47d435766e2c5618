"""The session's span metrics: the kernel's series named and summed for export.

kernel.metrics counts each end probe site's spans by raw status (sp_metrics)
and, for HTTP server spans, by the hashes of method and route and the status
code (sp_http). Here each cookie is known as the span type (name, kind) of a
process, whose resource is the process's; statuses become OpenTelemetry status
codes (0 ok and 2 cancelled are UNSET, as the spans say: docs/otel-mapping.md);
hashes become the strings the kernel sent in name records (session.drain).
OpenTelemetry API spans (the otel_span role) end in the application, not at
a probe the kernel pairs, so they are counted here, as each arrives
(``count_api_span``): every one the application fired and the ring buffer
held, in the same series shape (status OK too, which API spans can have).
An HTTP series whose names have not arrived yet is left out of that export and
counted (``unnamed``); being cumulative, it is whole in the next one that has
them. A process or provider that goes away has its series taken out of the
kernel maps first (``retire``): their last numbers are exported once more,
then forgotten.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage, Status as StatusMessage
from opentelemetry.sdk.resources import Resource

from spanprobe.abi.protocol import STATUS_CANCELLED, STATUS_OK

from ..assemble import ApiSpanSummary
from ..export.span_metrics import MetricsSender, SeriesPoint
from ..kernel import SpanType
from ..kernel.metrics import HTTP_BOUNDS_S, HTTP_METHOD, HTTP_ROUTE, HTTP_STATUS, MetricsTable, Series, bounds_ns

#: (metric, pid, attributes): one exported series.
SeriesKey = Tuple[str, int, Tuple[Tuple[str, object], ...]]
SPANS, HTTP = "spans", "http"
#: API span series kept at most (a series per process, name, kind, status; HTTP per method, route, status).
MAX_API_SERIES = 16384
_HTTP_BOUNDS_NS = bounds_ns([b * 1000 for b in HTTP_BOUNDS_S])
#: span.kind and status.code values by OTLP Span.kind and Status.code (opentelemetry-proto's enum names).
_KIND_NAMES = {v: k for k, v in SpanMessage.SpanKind.items()}
_STATUS_NAMES = {v: k for k, v in StatusMessage.StatusCode.items()}


def status_code(status: int) -> str:
    return "STATUS_CODE_UNSET" if status in (STATUS_OK, STATUS_CANCELLED) else "STATUS_CODE_ERROR"


class SpanMetrics:
    """Reads the kernel's series every ``interval`` seconds and hands them, named, to ``sender``."""

    def __init__(self, table: MetricsTable, sender: MetricsSender, resource_for: Callable[[int], Resource],
                 interval: float, names: Dict[int, str], bounds: Sequence[int] = ()):
        self.table = table
        #: the duration histogram's bucket bounds, ns (the kernel's)
        self.bounds = tuple(bounds)
        #: OpenTelemetry API span series, cumulative
        self._api: Dict[SeriesKey, SeriesPoint] = {}
        #: the same span series' points by (pid, span name, OTLP kind, OTLP status code)
        self._api_points: Dict[Tuple[int, str, int, int], SeriesPoint] = {}
        #: called for each API span left uncounted because MAX_API_SERIES series exist
        self.on_full: Callable[[], None] = lambda: None
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
                into[key] = self._new_point(key, s.count, s.sum_ns, list(s.buckets))
            else:
                point.add(s.count, s.sum_ns, s.buckets)

    def count_api_span(self, span: ApiSpanSummary) -> None:
        """Count one OpenTelemetry API span in its series (and http.server.request.duration's, for a server
        span with an HTTP method). Its span series is found by (pid, name, kind, status) as the span
        carries them; the attributes are made once, for a new series."""
        pid, name, kind, status, duration_ns, http = span
        point = self._api_points.get((pid, name, kind, status))
        if point is None:
            point = self._count_api(SPANS, pid, (("span.name", name), ("span.kind", _KIND_NAMES[kind]),
                                                 ("status.code", _STATUS_NAMES[status])), duration_ns, self.bounds)
            if point is not None:
                self._api_points[(pid, name, kind, status)] = point
        else:
            point.add_one(duration_ns, self.bounds)
        if http is not None:
            method, route, code = http
            attrs = [(HTTP_METHOD, method)]
            if route is not None:
                attrs.append((HTTP_ROUTE, route))
            if code is not None:
                attrs.append((HTTP_STATUS, code))
            self._count_api(HTTP, pid, tuple(attrs), duration_ns, _HTTP_BOUNDS_NS)

    def _new_point(self, key: SeriesKey, count: int, sum_ns: int, buckets: List[int]) -> SeriesPoint:
        """A series' first point, under its process's resource (span metrics also carry the spanmetrics
        connector's service.name dimension)."""
        metric, pid, attrs = key
        resource = self._resource_for(pid)
        if metric == SPANS:
            attrs = (("service.name", str(resource.attributes.get("service.name", "unknown_service"))), *attrs)
        return SeriesPoint(resource, attrs, count, sum_ns, buckets, self._started.setdefault(key, time.time_ns()))

    def _count_api(self, metric: str, pid: int, attrs, duration_ns: int,
                   bounds: Sequence[int]) -> Optional[SeriesPoint]:
        """Count a span in series (metric, pid, attrs); that series' point (None: not counted, too many)."""
        key = (metric, pid, attrs)
        point = self._api.get(key)
        if point is None:
            if len(self._api) >= MAX_API_SERIES:
                self.on_full()
                return None
            point = self._api[key] = self._new_point(key, 0, 0, [0] * (len(bounds) + 1))
        point.add_one(duration_ns, bounds)
        return point

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
        for key, point in self._api.items():  # cumulative: copies, so a later span does not change a sent one
            if key in current:  # a decorator span of the same name, kind and status in the same process
                current[key].add(point.count, point.sum_ns, point.buckets)
            else:
                current[key] = SeriesPoint(point.resource, point.attributes, point.count, point.sum_ns,
                                           list(point.buckets), point.start_ns)
        return ([p for k, p in current.items() if k[0] == SPANS], [p for k, p in current.items() if k[0] == HTTP])

    def tick(self, now: float, force: bool = False) -> None:
        if force or now >= self._next:
            self._next = now + self.interval
            spans, http = self.points()
            self.sender.submit(spans, http, time.time_ns())
