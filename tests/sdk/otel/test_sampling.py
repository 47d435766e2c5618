"""OTEL_TRACES_SAMPLER(_ARG): the same decisions as the SDK's samplers, and the sampled flag propagated."""

import logging
import random

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider as SdkProvider
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from spanprobe.otel import sampling

ENVS = [{}, {"OTEL_TRACES_SAMPLER": "always_on"}, {"OTEL_TRACES_SAMPLER": "always_off"},
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"},
        {"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, {"OTEL_TRACES_SAMPLER": "ParentBased_Always_On"},
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "lots"},
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
        {"OTEL_TRACES_SAMPLER": "no_such_sampler"}]

PARENTS = [None] + [SpanContext(0xAB, 0xCD, remote, TraceFlags(flags)) for remote in (False, True) for flags in (0, 1)]


@pytest.mark.parametrize("env", ENVS, ids=lambda e: ",".join("%s=%s" % kv for kv in e.items()) or "default")
def test_same_decisions_as_the_sdk(monkeypatch, env):
    for var in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ours = sampling.from_env()
    try:
        ref = SdkProvider().sampler
    except ValueError:  # SDKs before 1.45 raise for a ratio outside [0, 1]; spanprobe uses 1.0, as 1.45 does
        ref = TraceIdRatioBased(1.0)
    rng = random.Random(12)
    trace_ids = [rng.getrandbits(128) for _ in range(300)] + [1, (1 << 64) - 1, 1 << 63, (1 << 128) - 1]
    for parent in PARENTS:
        ctx = trace.set_span_in_context(NonRecordingSpan(parent)) if parent else None
        for trace_id in trace_ids:
            expected = ref.should_sample(ctx, trace_id, "span").decision.is_sampled()
            assert ours(parent, trace_id) is expected, (parent, hex(trace_id))


def test_bad_sampler_settings_are_reported(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sometimes")
    with caplog.at_level(logging.WARNING):
        decide = sampling.from_env()
    assert "OTEL_TRACES_SAMPLER='sometimes'" in caplog.text and decide(None, 5) is True


def test_unsampled_spans_are_not_fired_and_pass_the_flag_on(pair):
    """traceidratio 0.5 on random trace ids: ours fire exactly the spans the SDK exports; children follow."""
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    def ids():
        rng = random.Random(99)
        return iter(lambda: rng.getrandbits(64), None)
    p = pair(sampler=sampling.parent_based(sampling.trace_id_ratio(0.5)), sdk_sampler=ParentBasedTraceIdRatio(0.5),
             ids=ids)
    flags = []
    for tracer in p.tracers("t"):
        for i in range(40):
            with tracer.start_as_current_span("root %d" % i) as root:
                with tracer.start_as_current_span("child %d" % i) as child:
                    assert child.get_span_context().trace_flags.sampled == root.get_span_context().trace_flags.sampled
                    flags.append(child.get_span_context().trace_flags.sampled)
    ours = [s.spans[0] for s in p.ours()]
    theirs = [s.spans[0] for s in p.theirs()]
    assert 10 < len(ours) < 70  # some of the 80 spans kept, not all
    assert [(s.name, s.trace_id, s.span_id, s.parent_span_id) for s in ours] == \
        [(s.name, s.trace_id, s.span_id, s.parent_span_id) for s in theirs]
    assert flags[:40] == flags[40:]
