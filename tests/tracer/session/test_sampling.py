"""Sampling in the kernel: whole traces kept or dropped across two processes, as OpenTelemetry's samplers decide.

Two tracees share traces: process A begins each trace's root span (and a local
child), process B runs a server span under that root with a child of its own,
then A ends the root. Four spans a trace, in two processes. Each test runs on
both span paths (span_path: start/end probes paired in the kernel, and the
one-hit span probe, which the tracer uses where its sampler allows).
"""

from __future__ import annotations

import collections
import math

import pytest
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

from spanprobe_tracer.errors import TracerError
from spanprobe_tracer.kernel.sampling import Sampler, bound_for, resolve_sampler
from tests.support.tracer_helpers import jsonl_tracer, read_jsonl, run_spanprobe, stats_of, wait_attached

TRACES = 2000
SPANS_PER_TRACE = 4


def sdk_keeps(trace_id_hex: str, ratio: float) -> bool:
    """The OpenTelemetry SDK's own decision for this trace id."""
    result = TraceIdRatioBased(ratio).should_sample(None, int(trace_id_hex, 16), "span")
    return result.decision == Decision.RECORD_AND_SAMPLE


def run_shared(span_path, tmp_path, *args, seed=7, remote=False):
    """The two-process traces, traced with ``args``: (spans by trace id, the tracer's accounting, trace ids)."""
    a, b = span_path.tracee(), span_path.tracee()
    for t in (a, b):
        t.send("load shop")
    out, stats_file = tmp_path / "spans.jsonl", tmp_path / "stats.json"
    tracer = jsonl_tracer(out, stats_file, "--pid", str(a.pid), "--pid", str(b.pid), *args)
    extra = ("remote",) if remote else ()
    try:
        wait_attached(tracer, 2 * span_path.sites(*args))
        a.send(" ".join(("begin shop", str(TRACES), str(seed)) + extra))
        b.send(" ".join(("join shop", str(TRACES), str(seed)) + extra))
        ids = a.send("finish shop")["traces"]
        a.send("exit 0")
        b.send("exit 0")
        assert tracer.wait(60) == 0, tracer.stderr  # --pid: exits when both are gone
    finally:
        tracer.kill()
    traces = collections.defaultdict(list)
    for span in read_jsonl(out):
        traces[span["trace_id"]].append(span)
    return traces, stats_of(stats_file), ids, tracer.stderr


def assert_whole(traces):
    """Every exported trace has its four spans, in both processes, each parent present."""
    for trace_id, spans in traces.items():
        assert len(spans) == SPANS_PER_TRACE, (trace_id, [s["name"] for s in spans])
        assert len({s["resource"]["process.pid"] for s in spans}) == 2
        ids = {s["span_id"] for s in spans}
        roots = [s for s in spans if s["parent_span_id"] not in ids]
        assert len(roots) == 1, trace_id


@pytest.mark.bpf
def test_traceidratio_keeps_a_tenth_of_whole_traces_as_the_sdk_decides(span_path, tmp_path):
    traces, stats, ids, err = run_shared(span_path, tmp_path, "--sampler", "traceidratio",
                                         "--sampler-arg", "0.1")
    assert len(ids) == TRACES
    expected = {t for t in ids if sdk_keeps(t, 0.1)}
    assert set(traces) == expected  # the SDK's decision, trace by trace
    sigma = math.sqrt(TRACES * 0.1 * 0.9)
    assert abs(len(traces) - TRACES * 0.1) <= 6 * sigma, len(traces)
    assert_whole(traces)
    assert stats["sampled_out"] == SPANS_PER_TRACE * (TRACES - len(expected))
    assert stats["exported"] == SPANS_PER_TRACE * len(expected) and stats["lost"] == 0
    assert "sampled out (whole traces, not lost): %d spans, %d events" % (
        stats["sampled_out"], stats["kernel"]["point_sampled_out"]) in err


@pytest.mark.bpf
def test_parentbased_ratio_drops_children_of_dropped_roots_in_the_other_process(span_path, tmp_path):
    """The SDK marks its own traces sampled; the root's decision, remembered in the kernel, still rules
    the children that carry that flag, in the other process too."""
    traces, stats, ids, _ = run_shared(span_path, tmp_path, "--sampler", "parentbased_traceidratio",
                                       "--sampler-arg", "0.1", seed=11)
    assert set(traces) == {t for t in ids if sdk_keeps(t, 0.1)}
    assert_whole(traces)
    assert stats["sampled_out"] + stats["exported"] == SPANS_PER_TRACE * TRACES


@pytest.mark.bpf
def test_parentbased_follows_the_sampled_flag_of_a_remote_parent(span_path, tmp_path):
    """Roots with a remote parent: kept when the flags say sampled (even traces), dropped otherwise,
    whatever the ratio."""
    traces, stats, ids, _ = run_shared(span_path, tmp_path, "--sampler", "parentbased_traceidratio",
                                       "--sampler-arg", "0.1", seed=5, remote=True)
    assert set(traces) == set(ids[0::2])
    for spans in traces.values():
        assert len(spans) == SPANS_PER_TRACE  # the remote parent is not ours: every span here kept
    assert stats["sampled_out"] == SPANS_PER_TRACE * (TRACES // 2)


def test_the_kernel_rule_is_the_sdks():
    """Sampler.keep (the C's rule, in Python) against TraceIdRatioBased at the edges of the bound."""
    for ratio in (0.0, 1e-9, 0.1, 0.5, 0.999999, 1.0):
        bound = bound_for(ratio)
        assert bound == TraceIdRatioBased(ratio).bound
        for low in {0, max(bound - 1, 0), bound, min(bound + 1, 2**64 - 1), 2**64 - 1}:
            trace_id = (0xDEADBEEF << 64) | low
            assert Sampler("traceidratio", ratio).keep(trace_id) == sdk_keeps("%032x" % trace_id, ratio)
    assert Sampler("parentbased_traceidratio", 0.0).keep(1, parent_span_id=5, flags=1)
    assert not Sampler("parentbased_always_on").keep(1, parent_span_id=5, flags=0)


def test_sampler_settings_flags_over_environment_and_errors_name_their_source():
    assert resolve_sampler(env={}) == Sampler("parentbased_always_on")
    assert resolve_sampler(env={"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}) == \
        Sampler("traceidratio", 0.25)
    assert resolve_sampler("always_off", None, env={"OTEL_TRACES_SAMPLER": "traceidratio"}) == Sampler("always_off")
    assert resolve_sampler("traceidratio", "0.5", env={"OTEL_TRACES_SAMPLER_ARG": "0.1"}).ratio == 0.5
    assert resolve_sampler("adaptive", "5000", env={}).max_rate == 5000
    for flag, arg, env, named in [
            (None, None, {"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER='sometimes'"),
            ("sometimes", None, {}, "--sampler='sometimes'"),
            (None, None, {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
             "OTEL_TRACES_SAMPLER_ARG='1.5'"),
            ("traceidratio", "half", {}, "--sampler-arg='half'"),
            ("adaptive", "-3", {}, "--sampler-arg='-3'")]:
        with pytest.raises(TracerError) as info:
            resolve_sampler(flag, arg, env=env)
        assert named in str(info.value)


def test_a_bad_sampler_is_refused_before_anything_is_attached():
    r = run_spanprobe("trace", "--all", "--sampler", "traceidratio", "--sampler-arg", "2",
                      env={"OTEL_TRACES_SAMPLER": ""})
    assert r.returncode != 0 and "--sampler-arg='2'" in r.stderr
    r = run_spanprobe("trace", "--all", env={"OTEL_TRACES_SAMPLER": "coin"})
    assert r.returncode != 0 and "OTEL_TRACES_SAMPLER='coin'" in r.stderr


@pytest.mark.bpf
@pytest.mark.parametrize("sampler,remote,kept", [
    ("always_off", False, lambda ids: set()),
    ("always_on", False, lambda ids: set(ids)),
    ("parentbased_always_off", False, lambda ids: set()),           # roots dropped, children follow them
    ("parentbased_always_off", True, lambda ids: set(ids[0::2])),   # the remote parent's flag rules
    ("parentbased_always_on", True, lambda ids: set(ids[0::2])),
])
def test_the_other_samplers_on_shared_traces(span_path, tmp_path, sampler, remote, kept):
    traces, stats, ids, _ = run_shared(span_path, tmp_path, "--sampler", sampler, seed=3, remote=remote)
    expected = kept(ids)
    assert set(traces) == expected
    assert_whole(traces)
    assert stats["sampled_out"] == SPANS_PER_TRACE * (TRACES - len(expected))
