"""Plans: span and point types paired from a provider's schema, and the module layout they share."""

from __future__ import annotations

import pytest

from spanprobe import Arg, ArgType as T, Provider
from spanprobe.abi.protocol import END_ARGS, START_ARGS
from spanprobe_tracer.kernel import CaptureConfig, ProviderPlan
from tests.support.fake_records import image_of, typed_provider


def test_spans_of_one_shape_share_handlers():
    p = Provider("shared")
    for i in range(6):
        extra = [Arg("a", T.STR)] if i % 2 else []
        p.declare("s%d_start" % i, [*START_ARGS, *extra], "span_start")
        p.declare("s%d_end" % i, END_ARGS, "span_end")
        p.add_schema_span({"name": "op%d" % i, "start": "s%d_start" % i, "end": "s%d_end" % i})
    plan = ProviderPlan(image_of(p), CaptureConfig())
    assert len(plan.spans) == 6
    assert len(plan.layout.spans) == 2
    assert {s.shape.index for s in plan.spans} == {0, 1}
    # Another provider, other names, same shapes: the same module.
    q = Provider("other")
    q.declare("x_start", START_ARGS, "span_start")
    q.declare("x_end", END_ARGS, "span_end")
    q.declare("y_start", [*START_ARGS, Arg("zzz", T.STR)], "span_start")
    q.declare("y_end", END_ARGS, "span_end")
    q.add_schema_span({"name": "x", "start": "x_start", "end": "x_end"})
    q.add_schema_span({"name": "y", "start": "y_start", "end": "y_end"})
    assert ProviderPlan(image_of(q), CaptureConfig()).layout.key == plan.layout.key
    # A different capture setting is a different module.
    assert ProviderPlan(image_of(q), CaptureConfig(string_max=64)).layout.key != plan.layout.key


def test_protocol_violations_reject_the_provider():
    """The SDK's schema validation (shared with the tracer) refuses the whole provider."""
    from spanprobe.errors import SchemaError
    p = Provider("bad")
    p.declare("a_start", [Arg("span_id", T.U64), Arg("x", T.STR)], "span_start")
    p.declare("a_end", END_ARGS, "span_end")
    p.add_schema_span({"name": "a", "start": "a_start", "end": "a_end"})
    with pytest.raises(SchemaError, match="span_start probe must start with"):
        image_of(p)


def test_plan_skips_spans_it_cannot_pair_with_a_warning():
    """Defence in depth: a schema that validated but whose probes could not all be placed."""
    image = image_of(typed_provider())
    del image.probes["t_end"]  # as if its SDT note were missing
    image.broken["t_end"] = "declared in the schema but has no SDT note"
    warnings = []
    plan = ProviderPlan(image, CaptureConfig(), warn=warnings.append)
    assert plan.spans == []
    assert sorted(p.name for p in plan.points) == ["happened", "typed.plain"]
    assert any("span 'typed op'" in w and "cannot be traced" in w for w in warnings)


def test_config_is_checked():
    for bad in (CaptureConfig(string_max=0), CaptureConfig(string_max=5000), CaptureConfig(ringbuf_bytes=5000),
                CaptureConfig(min_duration_ns=-1)):
        with pytest.raises(ValueError):
            bad.check()


def test_spans_with_a_one_hit_probe_are_traced_by_it_alone():
    """An SDK span (start, end and span probes): the plan attaches its span probe and one handler; a
    hand-declared span (no span probe) keeps the pair; a sampler that remembers trace decisions keeps
    the pair for every span (kernel.plan.one_hit_allowed)."""
    from spanprobe_tracer.kernel.sampling import Sampler
    p = Provider("mixed")
    p.span("sdk", attributes={"a": str})(lambda a: a)
    p.declare("hand_start", [*START_ARGS, Arg("a", T.STR)], "span_start")
    p.declare("hand_end", END_ARGS, "span_end")
    p.add_schema_span({"name": "hand", "start": "hand_start", "end": "hand_end"})
    plan = ProviderPlan(image_of(p), CaptureConfig())
    spans = {s.name: s for s in plan.spans}
    assert spans["sdk"].one.name == "sdk__span" and spans["sdk"].shape.functions == [spans["sdk"].shape.one_fn]
    assert spans["hand"].one is None
    assert spans["hand"].shape.functions == [spans["hand"].shape.start_fn, spans["hand"].shape.end_fn]
    assert spans["sdk"].shape is not spans["hand"].shape   # same start/end shapes, other handlers
    assert not [pt for pt in plan.points if pt.role == "span"]
    for name in ("parentbased_traceidratio", "parentbased_always_off", "adaptive"):
        paired = ProviderPlan(image_of(p), CaptureConfig(sampler=Sampler(name, 0.5)))
        assert [s.one for s in paired.spans] == [None, None], name
    stateless = ProviderPlan(image_of(p), CaptureConfig(sampler=Sampler("traceidratio", 0.5)))
    assert {s.name: s.one is not None for s in stateless.spans} == {"sdk": True, "hand": False}
    assert [s.one for s in ProviderPlan(image_of(p), CaptureConfig(one_hit=False)).spans] == [None, None]


def test_a_span_probe_that_is_not_one_bytes_value_is_not_used():
    """Defence in depth (the schema validator refuses it first): the span falls back to its pair."""
    image = image_of(_one_hit_provider())
    probe = image.probes["op__span"]
    image.probes["op__span"] = type(probe)(probe.name, probe.role, [("span", "u64")], probe.specs, probe.locations)
    warnings = []
    (span,) = ProviderPlan(image, CaptureConfig(), warn=warnings.append).spans
    assert span.one is None and any("not one bytes value" in w for w in warnings)


def _one_hit_provider():
    p = Provider("onehit")
    p.span("op")(lambda: None)
    return p
