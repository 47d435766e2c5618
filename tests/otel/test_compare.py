"""The comparison of two exports (tests/support/span_compare) on real SDK exports of the scenarios.

Two SDK runs of one scenario are the same spans (so only ids, times and ports
differ from run to run, and the comparison ignores no more than that), and
each kind of difference the spanprobe run could have is reported, by place.
"""

from __future__ import annotations

import pytest

from tests.support import otel_services
from tests.support.otlp_receiver import ReceivedSpan
from tests.support.span_compare import assert_same_spans, differences, tree

SERVER, CLIENT = 2, 3
FRONTS = {"front": ("GET /items/<int:item_id>", "GET /proxy/<int:item_id>", "GET /boom"),
          "shop": ("GET /items/{item_id:int}", "GET /proxy/{item_id:int}", "GET /boom")}


def copy(spans):
    out = []
    for s in spans:
        span = type(s.span)()
        span.CopyFrom(s.span)
        out.append(ReceivedSpan(span, dict(s.resource), s.scope, s.scope_version, s.schema_url))
    return out


def named(spans, name):
    (span,) = [s for s in spans if s.name == name]
    return span


@pytest.mark.parametrize("front", sorted(FRONTS))
def test_the_scenario_makes_one_trace_per_request_across_both_services(sdk_exports, front):
    spans = sdk_exports[front]
    roots = [s for place, s in tree(spans) if place.count(" / ") == 1]
    assert [s.name for s in roots] == list(FRONTS[front])
    items, proxy, boom = roots
    assert {s.scope for s in spans if s.trace_id == items.trace_id} >= {"opentelemetry.instrumentation.sqlite3"}
    # SERVER (front) -> CLIENT (requests, front) -> SERVER (back), one trace
    client = [s for s in spans if s.parent_span_id == proxy.span_id and s.span.kind == CLIENT]
    assert len(client) == 1 and client[0].resource["service.name"] == front
    back = [s for s in spans if s.parent_span_id == client[0].span_id]
    assert [(s.name, s.span.kind, s.resource["service.name"], s.trace_id) for s in back] == \
        [("GET /stock/<int:item_id>", SERVER, "back", proxy.trace_id)]
    assert boom.span.status.code == 2 and "boom" in boom.span.status.message
    (event,) = boom.span.events
    assert event.name == "exception"
    assert "RuntimeError: boom" in {kv.key: kv.value.string_value for kv in event.attributes}["exception.stacktrace"]


@pytest.mark.parametrize("front", sorted(FRONTS))
def test_two_sdk_runs_are_the_same_spans(sdk_exports, front):
    assert_same_spans(sdk_exports[front], otel_services.sdk_export(front), "sdk run 1", "sdk run 2")


def test_every_kind_of_difference_is_reported_at_its_place(sdk_exports):
    want = sdk_exports["front"]
    assert differences(want, copy(want)) == []

    got = copy(want)
    named(got, "SELECT").span.attributes[0].value.string_value = "sqlite3?"
    boom = named(got, "GET /boom")
    boom.span.status.message = "other"
    boom.span.events[0].attributes[2].value.string_value = "a shorter stack"
    named(got, "GET /items/<int:item_id>").scope_version = "9.9"
    named(got, "GET").span.kind = 1
    named(got, "GET /stock/<int:item_id>").resource["service.name"] = "front"
    diff = "\n".join(differences(want, got))
    assert "trace 0 / GET /items/<int:item_id>#0 / SELECT#0: attribute db.system: sdk 'sqlite', spanprobe 'sqlite3?'" in diff
    assert "trace 2 / GET /boom#0: status:" in diff and "'other'" in diff
    assert "trace 2 / GET /boom#0: events:" in diff and "a shorter stack" in diff
    assert "trace 0 / GET /items/<int:item_id>#0: scope:" in diff and "'9.9'" in diff
    assert "trace 1 / GET /proxy/<int:item_id>#0 / GET#0: kind: sdk 3, spanprobe 1" in diff
    assert "/ GET /stock/<int:item_id>#0: service.name: sdk 'back', spanprobe 'front'" in diff
    assert len(diff.splitlines()) == 6, diff

    # a broken parent link: back's span becomes a root of its own, at another place
    got = copy(want)
    named(got, "GET /stock/<int:item_id>").span.parent_span_id = b"\1" * 8
    assert differences(want, got) == [
        "trace 1 / GET /proxy/<int:item_id>#0 / GET#0 / GET /stock/<int:item_id>#0: only in sdk",
        "trace 1 / GET /stock/<int:item_id>#1: only in spanprobe",  # the second root of trace 1
    ]
    # a missing span, and an extra attribute; ports are not compared, other numbers are
    got = copy(want)
    got.remove(named(got, "SELECT"))
    proxy = named(got, "GET /proxy/<int:item_id>").span
    proxy.attributes.add(key="extra").value.int_value = 1
    port = next(kv for kv in proxy.attributes if kv.key == "net.host.port")
    port.value.int_value += 1
    assert differences(want, got) == [
        "trace 0 / GET /items/<int:item_id>#0 / SELECT#0: only in sdk",
        "trace 1 / GET /proxy/<int:item_id>#0: attribute extra: sdk '(absent)', spanprobe 1",
    ]
    with pytest.raises(AssertionError, match="2 difference"):
        assert_same_spans(want, got)
