"""Span metrics out: the kernel's call counts and duration histograms as OpenTelemetry metrics.

Shaped like the OpenTelemetry Collector's spanmetrics connector, so dashboards
built for it work: ``traces.span.metrics.calls`` (Sum, monotonic, cumulative,
unit ``{call}``) and ``traces.span.metrics.duration`` (Histogram, cumulative,
unit ``ms``, the connector's default), each data point with ``service.name``,
``span.name``, ``span.kind`` (``SPAN_KIND_SERVER``...) and ``status.code``
(``STATUS_CODE_UNSET`` / ``STATUS_CODE_ERROR``), under the process's resource.
The numbers are the kernel's (kernel.metrics), summed by series; this module
only encodes and sends them: OTLP (our client, the metrics signal's settings),
the console, or nowhere. A background thread exports, so a slow collector
never holds up the tracer's loop.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
from dataclasses import dataclass
from typing import IO, Callable, List, Optional, Sequence, Tuple

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.resources import Resource

from .. import __version__
from ..kernel.metrics import HTTP_BOUNDS_S

log = logging.getLogger("spanprobe.tracer")

CALLS, DURATION = "traces.span.metrics.calls", "traces.span.metrics.duration"
HTTP_DURATION = "http.server.request.duration"
#: The exporters OTEL_METRICS_EXPORTER may name.
METRICS_EXPORTERS = ("otlp", "console", "none")
SCOPE = "spanprobe.spanmetrics"


@dataclass
class SeriesPoint:
    """One series' cumulative numbers, under its process's resource, with its data point attributes."""

    resource: Resource
    attributes: Tuple[Tuple[str, object], ...]
    count: int
    sum_ns: int
    buckets: List[int]
    start_ns: int           # wall-clock time the series began (cumulative temporality)

    def add(self, count: int, sum_ns: int, buckets: Sequence[int]) -> None:
        self.count += count
        self.sum_ns += sum_ns
        self.buckets = [a + b for a, b in zip(self.buckets, buckets)]

    def add_one(self, duration_ns: int, bounds: Sequence[int]) -> None:
        """Count one span of ``duration_ns`` (bucket i: (bound i-1, bound i])."""
        self.count += 1
        self.sum_ns += duration_ns
        self.buckets[bisect.bisect_left(bounds, duration_ns)] += 1


def _any(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value={"values": [_any(v) for v in value]})
    return AnyValue(string_value=str(value))


def _kvs(items) -> List[KeyValue]:
    return [KeyValue(key=k, value=_any(v)) for k, v in items]


def encode_request(points: Sequence[SeriesPoint], bounds_ms: Sequence[float], now_ns: int,
                   http_points: Sequence[SeriesPoint] = ()) -> bytes:
    """An ExportMetricsServiceRequest: per resource, the calls Sum and the duration Histogram, and
    http.server.request.duration (seconds, the semantic conventions' bounds) where it has HTTP server spans."""
    request = ExportMetricsServiceRequest()
    by_resource = {}
    for which, group in ((0, points), (1, http_points)):
        for p in group:
            by_resource.setdefault(id(p.resource), (p.resource, [], []))[1 + which].append(p)
    for resource, spans, http in by_resource.values():
        rm = request.resource_metrics.add()
        rm.resource.attributes.extend(_kvs(resource.attributes.items()))
        sm = rm.scope_metrics.add()
        sm.scope.CopyFrom(InstrumentationScope(name=SCOPE, version=__version__))
        if spans:
            calls = sm.metrics.add(name=CALLS, unit="{call}", description="spans ended, by span name, kind and status")
            calls.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
            calls.sum.is_monotonic = True
            for p in spans:
                calls.sum.data_points.add(attributes=_kvs(p.attributes), start_time_unix_nano=p.start_ns,
                                          time_unix_nano=now_ns, as_int=p.count)
            _histogram(sm.metrics.add(name=DURATION, unit="ms", description="span durations"), spans, bounds_ms,
                       1e6, now_ns)
        if http:
            _histogram(sm.metrics.add(name=HTTP_DURATION, unit="s", description="Duration of HTTP server requests."),
                       http, HTTP_BOUNDS_S, 1e9, now_ns)
    return request.SerializeToString()


def _histogram(metric, points: Sequence[SeriesPoint], bounds, ns_per_unit: float, now_ns: int) -> None:
    metric.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    for p in points:
        metric.histogram.data_points.add(attributes=_kvs(p.attributes), start_time_unix_nano=p.start_ns,
                                         time_unix_nano=now_ns, count=p.count, sum=p.sum_ns / ns_per_unit,
                                         bucket_counts=p.buckets, explicit_bounds=list(bounds))


class OtlpMetricsExporter:
    """Sends span metrics with our OTLP client (settings for the "metrics" signal)."""

    def __init__(self, settings, bounds_ms: Sequence[float]):
        from .otlp.client import make_client  # grpcio only when OTLP is used
        if settings.signal != "metrics":
            raise ValueError("OtlpMetricsExporter exports metrics, not %s" % settings.signal)
        self.settings = settings
        self.bounds_ms = tuple(bounds_ms)
        self.client = make_client(settings)

    def export(self, points: Sequence[SeriesPoint], http_points: Sequence[SeriesPoint], now_ns: int) -> bool:
        if not points and not http_points:
            return True
        body = encode_request(points, self.bounds_ms, now_ns, http_points)
        result = self.client.export(body, 2 * len(points) + len(http_points))
        if not result.ok:
            log.warning("OTLP export of span metrics (%d series) to %s failed: %s %r",
                        len(points) + len(http_points), self.settings.endpoint, result.status, result.message)
        return result.ok

    def shutdown(self) -> None:
        self.client.shutdown()


class ConsoleMetricsExporter:
    """One line per series on ``out``: the calls and the histogram. Values are JSON (span names are untrusted
    text: quoted and escaped, control characters included)."""

    def __init__(self, out: IO[str], bounds_ms: Sequence[float]):
        self.out = out
        self.bounds_ms = tuple(bounds_ms)

    def export(self, points: Sequence[SeriesPoint], http_points: Sequence[SeriesPoint], now_ns: int) -> bool:
        for name, group in ((DURATION, points), (HTTP_DURATION, http_points)):
            for p in group:
                attrs = " ".join("%s=%s" % (k, json.dumps(v)) for k, v in p.attributes)
                self.out.write("metrics: %s %s calls=%d sum_ms=%.3f buckets=%s\n"
                               % (name, attrs, p.count, p.sum_ns / 1e6, ",".join(map(str, p.buckets))))
        self.out.flush()
        return True

    def shutdown(self) -> None:
        pass


class MetricsSender:
    """Exports the latest snapshot in a thread of its own; a snapshot not sent yet is replaced by a newer one
    (every snapshot is cumulative: the newest says it all)."""

    def __init__(self, exporter, on_failed: Optional[Callable[[], None]] = None):
        self.exporter = exporter
        self._on_failed = on_failed
        self._cond = threading.Condition()
        self._pending: Optional[Tuple[List[SeriesPoint], List[SeriesPoint], int]] = None
        self._busy = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="spanprobe-metrics", daemon=True)
        self._thread.start()

    def submit(self, points: List[SeriesPoint], http_points: List[SeriesPoint], now_ns: int) -> None:
        with self._cond:
            self._pending = (points, http_points, now_ns)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closing:
                    self._cond.wait()
                if self._pending is None:
                    return
                snapshot, self._pending = self._pending, None
                self._busy = True
            try:
                ok = self.exporter.export(*snapshot)
            except Exception as exc:  # an exporter bug must not end the thread silently
                log.warning("span metrics export failed: %s: %s", type(exc).__name__, exc)
                ok = False
            if not ok and self._on_failed is not None:
                self._on_failed()
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def shutdown(self, timeout: float) -> None:
        """Send what is pending (within ``timeout`` seconds), then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout)
        self._thread.join(max(timeout, 0.1))
        self.exporter.shutdown()
