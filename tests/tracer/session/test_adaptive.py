"""The adaptive sampler at several times the rate the tracer can export (at least four times: the test checks;
~15x here): fewer traces, every one whole, span metrics still exact."""

from __future__ import annotations

import collections
import time

import pytest

from tests.support.otlp_receiver import Collector, GrpcReceiver
from tests.support.tracer_helpers import Tracer, stats_of, wait_attached
from tests.tracer.session.test_span_metrics import metric_points

pytestmark = pytest.mark.bpf

#: Seconds the receiver takes to answer each trace export: with batches of at most 1024 spans, the
#: tracer cannot export more than ~4,000 spans/s; the tracee fires several times that.
EXPORT_DELAY_S = 0.25
TRACES = 30000


class SlowCollector(Collector):
    def arrived(self, arrival):
        if arrival.signal == "traces":
            time.sleep(EXPORT_DELAY_S)
        return super().arrived(arrival)


def test_overload_gives_fewer_whole_traces_and_exact_metrics(span_path, tmp_path):
    """On both span paths: with one-hit span probes the tracer still pairs start and end probes under the
    adaptive sampler (it remembers each trace's decision from the trace's first span to start)."""
    tracee = span_path.tracee()
    receiver = GrpcReceiver(SlowCollector())
    tracee.send("load shop")
    stats_file = tmp_path / "stats.json"
    tracer = Tracer("trace", "--pid", str(tracee.pid), "--exporter", "otlp", "--otlp-endpoint", receiver.endpoint,
                    "--stats-file", str(stats_file), "--duration", "300", "--sampler", "adaptive",
                    env={"OTEL_METRIC_EXPORT_INTERVAL": "1000"})
    try:
        wait_attached(tracer, span_path.sites("--sampler", "adaptive"))
        t0 = time.monotonic()
        reply = tracee.send("spans shop %d" % TRACES, timeout=120)
        fire_s = time.monotonic() - t0
        tracee.send("exit 0")
        assert tracer.wait(180) == 0, tracer.stderr
    finally:
        tracer.kill()
        receiver.stop()
    stats = stats_of(stats_file)
    fired = reply["spans"]
    fired_per_s = fired / fire_s
    capacity = 1024 / EXPORT_DELAY_S
    assert fired_per_s > 4 * capacity, "the tracee fired only %.0f spans/s" % fired_per_s
    # The books balance, and the sampler, not loss, took the excess.
    lost_spans = stats["kernel"]["span_rb_full"] + stats["kernel"]["start_map_full"] + sum(stats["dropped"].values())
    assert stats["exported"] + lost_spans + stats["sampled_out"] == fired, stats
    assert stats["sampled_out"] > fired / 2 and stats["sampler_ratio"] is not None
    traces = collections.defaultdict(list)
    for s in receiver.collector.spans:
        traces[s.trace_id].append(s)
    assert traces, "no trace reached the collector"
    incomplete = {t: sorted(s.name for s in spans) for t, spans in traces.items() if len(spans) != 3}
    assert not incomplete, "%d of %d traces incomplete (lost %d: %s)" % (
        len(incomplete), len(traces), stats["lost"], stats["dropped"])
    for spans in traces.values():
        (root,) = [s for s in spans if not s.parent_span_id.strip("0")]
        assert {s.parent_span_id for s in spans if s is not root} == {root.span_id}
    calls = {(dict(k)["span.name"], dict(k)["status.code"]): p.as_int
             for k, (_, p, _) in metric_points(receiver.collector, "traces.span.metrics.calls").items()}
    assert calls == {("GET /items", "STATUS_CODE_UNSET"): TRACES, ("db.query", "STATUS_CODE_UNSET"): TRACES,
                     ("db.query", "STATUS_CODE_ERROR"): TRACES}


class FakeBound:
    def __init__(self):
        self.ratios = []

    def set(self, ratio):
        self.ratios.append(ratio)


def counters(kept, rb_full=0):
    from spanprobe_tracer.kernel import Counter
    c = {k: 0 for k in Counter}
    c[Counter.SPANS], c[Counter.SPAN_RB_FULL] = kept - rb_full, rb_full
    return c


def test_the_control_law():
    """Overloaded: cut to 0.7 x the share delivered (at most tenfold a tick); idle: up a quarter a tick;
    a spans/s ceiling holds the kept rate under it."""
    from spanprobe_tracer.session.adaptive import MIN_RATIO, AdaptiveRatio
    bound = FakeBound()
    a = AdaptiveRatio(bound)
    assert bound.ratios == [1.0]
    a.update(counters(0), 0, 0, 0.0, 0.5)
    assert a.update(counters(10000), 0, 2000, 0.5, 0.5) == pytest.approx(0.14)   # queue > 1/4: 0.7 * 2000/10000
    assert a.update(counters(20000), 0, 2000, 0.5, 0.5) == pytest.approx(0.014)  # at most tenfold a tick
    assert a.update(counters(20000), 0, 2000, 0.01, 0.5) == pytest.approx(0.0175)  # idle: up a quarter
    assert a.update(counters(20000), 0, 2000, 0.1, 0.5) == pytest.approx(0.0175)   # neither: held
    assert a.update(counters(20100, rb_full=100), 0, 2100, 0.0, 0.5) == pytest.approx(0.0175 * 0.7)  # loss
    for _ in range(60):
        a.update(counters(20100, rb_full=100), 0, 2100, 0.5, 0.5)
    assert a.ratio == MIN_RATIO
    capped = AdaptiveRatio(FakeBound(), max_rate=1000)
    capped.update(counters(0), 0, 0, 0.0, 1.0)
    assert capped.update(counters(4000), 0, 4000, 0.0, 1.0) == pytest.approx(0.25)  # 4000/s kept, 1000/s allowed
