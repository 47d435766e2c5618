"""Span metrics counted in the kernel from every span, exported over OTLP like the spanmetrics connector.

The counting tests run on both span paths (span_path: start/end probes paired in the kernel, and the
one-hit span probe)."""

from __future__ import annotations

import collections
import shlex

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from spanprobe_tracer.kernel.metrics import DEFAULT_BOUNDS_MS, HTTP_BOUNDS_S
from tests.support.otlp_receiver import attributes
from tests.support.tracer_helpers import SITES, Tracer, run_spanprobe, stats_of, wait_attached

pytestmark = pytest.mark.bpf

TRACES = 300


def metric_points(collector, name):
    """The data points of metric ``name`` in the last metrics request that has it: {attributes: point}."""
    last = {}
    for arrival in collector.arrivals:
        if arrival.signal != "metrics" or arrival.request is None:
            continue
        found = {}
        for rm in arrival.request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name != name:
                        continue
                    data = m.sum if m.HasField("sum") else m.histogram
                    for p in data.data_points:
                        found[tuple(sorted(attributes(p.attributes).items()))] = (m, p, attributes(rm.resource.attributes))
        if found:
            last = found
    return last


def trace_spans(tracee, receiver, tmp_path, *args, env=None, sites=SITES):
    """`spans shop TRACES` in ``tracee`` traced to ``receiver`` with ``args`` (``sites`` probe sites attached);
    the tracer's accounting."""
    tracee.send("load shop")
    stats_file = tmp_path / "stats.json"
    tracer = Tracer("trace", "--pid", str(tracee.pid), "--exporter", "otlp", "--otlp-endpoint", receiver.endpoint,
                    "--stats-file", str(stats_file), "--duration", "120", *args,
                    env=dict({"OTEL_METRIC_EXPORT_INTERVAL": "300"}, **(env or {})))
    try:
        wait_attached(tracer, sites)
        tracee.send("spans shop %d" % TRACES)
        tracee.send("exit 0")
        assert tracer.wait(60) == 0, tracer.stderr
    finally:
        tracer.kill()
    return stats_of(stats_file)


def test_counts_equal_spans_fired_while_a_tenth_is_sampled(span_path, grpc_receiver, tmp_path):
    tracee, args = span_path.tracee(), ("--sampler", "traceidratio", "--sampler-arg", "0.1")
    stats = trace_spans(tracee, grpc_receiver, tmp_path, *args, sites=span_path.sites(*args))
    assert 0 < stats["spans_received"] < TRACES * 3 and stats["sampled_out"] == TRACES * 3 - stats["spans_received"]
    # each trace's event goes with it
    assert stats["kernel"]["point_sampled_out"] == TRACES - stats["spans_received"] // 3
    calls = metric_points(grpc_receiver.collector, "traces.span.metrics.calls")
    durations = metric_points(grpc_receiver.collector, "traces.span.metrics.duration")
    got = {}
    for key, (metric, point, resource) in calls.items():
        attrs = dict(key)
        assert resource["process.pid"] == tracee.pid and attrs["service.name"] == resource["service.name"]
        assert metric.unit == "{call}" and metric.sum.is_monotonic
        assert metric.sum.aggregation_temporality == 2  # AGGREGATION_TEMPORALITY_CUMULATIVE
        got[(attrs["span.name"], attrs["span.kind"], attrs["status.code"])] = point.as_int
    assert got == {("GET /items", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET"): TRACES,
                   ("db.query", "SPAN_KIND_CLIENT", "STATUS_CODE_UNSET"): TRACES,
                   ("db.query", "SPAN_KIND_CLIENT", "STATUS_CODE_ERROR"): TRACES}
    assert set(durations) == set(calls)
    for key, (metric, point, _) in durations.items():
        assert metric.unit == "ms" and metric.histogram.aggregation_temporality == 2
        assert point.count == calls[key][1].as_int == sum(point.bucket_counts)
        assert list(point.explicit_bounds) == list(DEFAULT_BOUNDS_MS)
        assert len(point.bucket_counts) == len(DEFAULT_BOUNDS_MS) + 1


def test_histograms_match_the_sdks_for_the_same_durations(span_path, grpc_receiver, tmp_path):
    """Every span exported (always_on): the durations the spans carry, recorded in the OpenTelemetry SDK's own
    histogram with the same bounds, give the same buckets, count and sum as the kernel's."""
    bounds = "0.01,0.02,0.05,0.1,0.5,1,5"
    args = ("--sampler", "always_on", "--histogram-buckets", bounds)
    trace_spans(span_path.tracee(), grpc_receiver, tmp_path, *args, sites=span_path.sites(*args))
    spans = grpc_receiver.collector.spans
    assert len(spans) == 3 * TRACES
    reader = InMemoryMetricReader()
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
    provider = MeterProvider(metric_readers=[reader], views=[View(
        instrument_name="d", aggregation=ExplicitBucketHistogramAggregation([float(b) for b in bounds.split(",")]))])
    hist = provider.get_meter("ref").create_histogram("d", unit="ms")
    for s in spans:
        status = "STATUS_CODE_ERROR" if s.span.status.code == 2 else "STATUS_CODE_UNSET"
        hist.record((s.span.end_time_unix_nano - s.span.start_time_unix_nano) / 1e6,
                    {"span.name": s.name, "status.code": status})
    (ref_metric,) = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
    reference = {(p.attributes["span.name"], p.attributes["status.code"]): p for p in ref_metric.data.data_points}
    ours = {(dict(k)["span.name"], dict(k)["status.code"]): p
            for k, (_, p, _) in metric_points(grpc_receiver.collector, "traces.span.metrics.duration").items()}
    assert set(ours) == set(reference)
    for key, ref in reference.items():
        p = ours[key]
        assert list(p.explicit_bounds) == list(ref.explicit_bounds)
        assert list(p.bucket_counts) == list(ref.bucket_counts), key
        assert p.count == ref.count
        assert p.sum == pytest.approx(ref.sum, rel=1e-9)
    provider.shutdown()


def test_http_server_duration_counts_every_request_by_method_route_and_status(span_path, grpc_receiver, tmp_path):
    """http.server.request.duration from HTTP server spans, a tenth of them sampled: counts exact per method,
    route and status, the names sent by the kernel, seconds and the semantic conventions' buckets."""
    tracee = span_path.tracee()
    tracee.send("web web")
    stats_file = tmp_path / "stats.json"
    tracer = Tracer("trace", "--pid", str(tracee.pid), "--exporter", "otlp", "--otlp-endpoint",
                    grpc_receiver.endpoint, "--stats-file", str(stats_file), "--duration", "120",
                    "--sampler", "traceidratio", "--sampler-arg", "0.1", env={"OTEL_METRIC_EXPORT_INTERVAL": "300"})
    try:
        wait_attached(tracer, span_path.sites("--sampler", "traceidratio", spans=1, others=0))
        counts = tracee.send("requests web 1200")["counts"]
        tracee.send("exit 0")
        assert tracer.wait(60) == 0, tracer.stderr
    finally:
        tracer.kill()
    stats = stats_of(stats_file)
    assert stats["sampled_out"] > 900
    points = metric_points(grpc_receiver.collector, "http.server.request.duration")
    got = {}
    for key, (metric, point, resource) in points.items():
        attrs = dict(key)
        assert metric.unit == "s" and resource["process.pid"] == tracee.pid
        assert list(point.explicit_bounds) == list(HTTP_BOUNDS_S)
        assert sum(point.bucket_counts) == point.count
        assert 0 < point.sum < point.count * 0.01  # back-to-back probes: microseconds each, in seconds
        got["%s %s %d" % (attrs["http.request.method"], attrs["http.route"],
                          attrs["http.response.status_code"])] = point.count
    assert got == counts and len(counts) == 12
    calls = metric_points(grpc_receiver.collector, "traces.span.metrics.calls")
    assert sum(p.as_int for _, p, _ in calls.values()) == 1200


def test_metrics_exporter_none_and_console(tracee_factory, tmp_path):
    """OTEL_METRICS_EXPORTER=console prints each series; none compiles no metrics at all."""
    for name in ("console", "none"):
        tracee = tracee_factory()
        tracee.send("load shop")
        stats_file = tmp_path / ("stats-%s.json" % name)
        tracer = Tracer("trace", "--pid", str(tracee.pid), "--exporter", "jsonl", "--output", str(tmp_path / "o"),
                        "--stats-file", str(stats_file), env={"OTEL_METRICS_EXPORTER": name})
        try:
            wait_attached(tracer, SITES)
            tracee.send("spans shop 5")
            tracee.send("exit 0")
            assert tracer.wait(60) == 0, tracer.stderr
        finally:
            tracer.kill()
        lines = [l for l in tracer.stderr.splitlines() if l.startswith("metrics: ")]
        if name == "none":
            assert lines == []
        else:
            counts = collections.Counter()
            for line in lines:
                metric, *fields = shlex.split(line[len("metrics: "):])
                fields = dict(f.split("=", 1) for f in fields)
                if metric == "traces.span.metrics.duration":
                    counts[(fields["span.name"], fields["status.code"])] = int(fields["calls"])
                else:  # the server span has a method and a status code, no route
                    assert metric == "http.server.request.duration" and "http.route" not in fields
                    counts[(fields["http.request.method"], fields["http.response.status_code"])] = int(fields["calls"])
            assert counts == {("GET /items", "STATUS_CODE_UNSET"): 5, ("db.query", "STATUS_CODE_UNSET"): 5,
                              ("db.query", "STATUS_CODE_ERROR"): 5, ("GET", "200"): 5}


def test_failed_metrics_exports_are_counted(tracee, grpc_receiver, tmp_path):
    """A collector refusing metrics: each failed export is counted and reported (spans go to a file)."""
    grpc_receiver.collector.fail_with = grpc.StatusCode.INVALID_ARGUMENT  # not retryable
    tracee.send("load shop")
    stats_file = tmp_path / "stats.json"
    tracer = Tracer("trace", "--pid", str(tracee.pid), "--exporter", "jsonl", "--output", str(tmp_path / "o"),
                    "--metrics-exporter", "otlp", "--otlp-endpoint", grpc_receiver.endpoint,
                    "--metrics-interval", "0.2", "--stats-file", str(stats_file))
    try:
        wait_attached(tracer, SITES)
        tracee.send("spans shop 3")
        tracee.send("exit 0")
        assert tracer.wait(60) == 0, tracer.stderr
    finally:
        tracer.kill()
    failed = stats_of(stats_file)["metrics_exports_failed"]
    assert failed >= 1 and "span metrics exports failed: %d" % failed in tracer.stderr
    assert any(a.signal == "metrics" for a in grpc_receiver.collector.arrivals)


@pytest.mark.parametrize("args,env,named", [
    ((), {"OTEL_METRICS_EXPORTER": "prometheus"}, "OTEL_METRICS_EXPORTER='prometheus'"),
    ((), {"OTEL_METRICS_EXPORTER": "console", "OTEL_METRIC_EXPORT_INTERVAL": "1.5s"},
     "OTEL_METRIC_EXPORT_INTERVAL='1.5s'"),
    (("--metrics-exporter", "console", "--metrics-interval", "0"), {}, "--metrics-interval"),
    (("--histogram-buckets", "5,1"), {}, "--histogram-buckets '5,1'"),
    (("--histogram-buckets", "1,x"), {}, "--histogram-buckets '1,x'"),
])
def test_bad_metrics_settings_are_refused_naming_their_source(args, env, named):
    r = run_spanprobe("trace", "--all", *args, env=dict({"OTEL_METRICS_EXPORTER": ""}, **env))
    assert r.returncode == 2 and named in r.stderr, r.stderr


def test_api_spans_are_counted_like_the_kernels(grpc_receiver, tmp_path):
    """OpenTelemetry API spans (spanprobe.otel, one otel_span probe per finished span) end in the application,
    not at a probe the kernel pairs: the tracer counts each as it arrives, in the same series shape. Every
    span of tests/support/otel_app.py is counted once, under the application's service name, its duration
    in the SDK's default buckets; its HTTP server span feeds http.server.request.duration."""
    import sys
    from pathlib import Path

    from tests.support import otel_app

    r = run_spanprobe("trace", "--exporter", "otlp", "--otlp-endpoint", grpc_receiver.endpoint, "--",
                      sys.executable, str(Path(otel_app.__file__)), timeout=120,
                      env={"OTEL_PYTHON_TRACER_PROVIDER": "spanprobe", "OTEL_SERVICE_NAME": "otel-app",
                           "OTEL_METRIC_EXPORT_INTERVAL": "300"})
    assert r.returncode == 0, r.stderr
    spans = {s.name: s.span for s in grpc_receiver.collector.spans}
    assert len(spans) == 4
    calls = {(a["span.name"], a["span.kind"], a["status.code"]): (p.as_int, res["service.name"], a["service.name"])
             for k, (_, p, res) in metric_points(grpc_receiver.collector, "traces.span.metrics.calls").items()
             for a in [dict(k)]}
    assert calls == {
        ("GET /items/<id>", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET"): (1, "otel-app", "otel-app"),
        ("SELECT items", "SPAN_KIND_CLIENT", "STATUS_CODE_UNSET"): (1, "otel-app", "otel-app"),
        ("fails", "SPAN_KIND_INTERNAL", "STATUS_CODE_ERROR"): (1, "otel-app", "otel-app"),
        ("linked renamed", "SPAN_KIND_INTERNAL", "STATUS_CODE_ERROR"): (1, "otel-app", "otel-app"),
    }
    bounds_ms = [float(b) for b in DEFAULT_BOUNDS_MS]
    for k, (metric, p, _) in metric_points(grpc_receiver.collector, "traces.span.metrics.duration").items():
        span = spans[dict(k)["span.name"]]
        ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
        assert metric.unit == "ms" and list(p.explicit_bounds) == bounds_ms and p.count == 1
        assert p.sum == pytest.approx(ms, rel=1e-9)
        assert list(p.bucket_counts) == [1 if i == sum(b < ms for b in bounds_ms) else 0
                                         for i in range(len(bounds_ms) + 1)]
    (http,) = metric_points(grpc_receiver.collector, "http.server.request.duration").items()
    (key, (metric, p, _)) = http
    assert dict(key) == {"http.request.method": "GET", "http.route": "/items/<id>", "http.response.status_code": 200}
    assert metric.unit == "s" and p.count == 1 and list(p.explicit_bounds) == list(HTTP_BOUNDS_S)


def test_api_span_series_count_every_span_read_from_payloads():
    """count_api_span (no BPF): spans read from otel_span payloads (assemble.otel), several a series,
    land in their series with counts, sums and buckets as the kernel's shape has them; only server spans
    carrying http.request.method feed http.server.request.duration (a client span with it does not)."""
    import bisect

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode

    from spanprobe_tracer.assemble.otel import OtelSpanReader
    from spanprobe_tracer.decode import OtelSpanRecord
    from spanprobe_tracer.session.span_metrics import SpanMetrics

    class NoKernelSeries:
        def read(self):
            return []

        read_http = read

    resource = Resource({"service.name": "svc"})
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    http = {"http.request.method": "GET", "http.route": "/a/<id>", "http.response.status_code": 200}
    made = [("GET /a/<id>", SpanKind.SERVER, http, None), ("GET /a/<id>", SpanKind.SERVER, http, None),
            ("GET /a/<id>", SpanKind.SERVER, dict(http, **{"http.response.status_code": 500}), StatusCode.ERROR),
            ("GET", SpanKind.CLIENT, http, None), ("GET /old", SpanKind.SERVER, {"http.method": "GET"}, None),
            ("GET", SpanKind.CLIENT, http, None), ("GET /a/<id>", SpanKind.SERVER, http, None)]
    for i, (name, kind, attrs, status) in enumerate(made):
        span = tracer.start_span(name, kind=kind, attributes=attrs, start_time=1_000_000)
        if status is not None:
            span.set_status(status)
        span.end(end_time=1_000_000 + (i + 1) * 3_000_000)
    bounds = (5_000_000, 10_000_000, 20_000_000)
    metrics = SpanMetrics(NoKernelSeries(), None, lambda pid: resource, 60.0, {}, bounds)
    reader = OtelSpanReader(lambda pid: resource)
    reader.observe = metrics.count_api_span
    for span in exporter.get_finished_spans():
        scope_spans = encode_spans([span]).resource_spans[0].scope_spans[0]
        reader.span(OtelSpanRecord(None, 7, 1, 0, scope_spans.SerializeToString(), True))
    spans, http_points = metrics.points()

    def expect(durations):
        buckets = [0] * (len(bounds) + 1)
        for d in durations:
            buckets[bisect.bisect_left(bounds, d)] += 1
        return len(durations), sum(durations), buckets

    ms3 = [(i + 1) * 3_000_000 for i in range(len(made))]
    assert {p.attributes: (p.count, p.sum_ns, p.buckets) for p in spans} == {
        (("service.name", "svc"), ("span.name", "GET /a/<id>"), ("span.kind", "SPAN_KIND_SERVER"),
         ("status.code", "STATUS_CODE_UNSET")): expect([ms3[0], ms3[1], ms3[6]]),
        (("service.name", "svc"), ("span.name", "GET /a/<id>"), ("span.kind", "SPAN_KIND_SERVER"),
         ("status.code", "STATUS_CODE_ERROR")): expect([ms3[2]]),
        (("service.name", "svc"), ("span.name", "GET"), ("span.kind", "SPAN_KIND_CLIENT"),
         ("status.code", "STATUS_CODE_UNSET")): expect([ms3[3], ms3[5]]),
        (("service.name", "svc"), ("span.name", "GET /old"), ("span.kind", "SPAN_KIND_SERVER"),
         ("status.code", "STATUS_CODE_UNSET")): expect([ms3[4]]),
    }
    route = (("http.request.method", "GET"), ("http.route", "/a/<id>"))
    assert {p.attributes: p.count for p in http_points} == {
        route + (("http.response.status_code", 200),): 3, route + (("http.response.status_code", 500),): 1}


def test_series_point_add_one_counts_a_span_in_its_bucket():
    """SeriesPoint.add_one, the one increment count_api_span uses for new and known series: a duration on
    a bound lands in that bound's bucket ((bound i-1, bound i], as the kernel's histogram)."""
    from spanprobe_tracer.export.span_metrics import SeriesPoint

    bounds = (5, 10)
    point = SeriesPoint(None, (), 0, 0, [0, 0, 0], 0)
    for d in (5, 6, 10, 11, 0):
        point.add_one(d, bounds)
    assert (point.count, point.sum_ns, point.buckets) == (5, 32, [2, 2, 1])
