"""The otel_span payload against the official SDK and its OTLP encoder, field by field and byte by byte."""

import logging
import traceback
from importlib.metadata import version

import pytest
from opentelemetry import trace
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans
from opentelemetry.sdk.trace import SpanLimits as SdkLimits
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from spanprobe.abi import otlp
from spanprobe.abi.protocol import MAX_BYTES
from spanprobe.otel import SpanLimits
from spanprobe.otel.payload import CUT_MARKER

T0 = 1_700_000_000_000_000_000

#: The reference is the SDK this project requires (pyproject: opentelemetry-sdk>=1.45). The SDK
#: matrix's Python 3.9 gets 1.41, which cleaned attributes differently (bytes made str, None and
#: mixed sequences dropped): the side-by-side comparisons of attribute values need 1.45.
SDK_1_45 = pytest.mark.skipif(tuple(int(x) for x in version("opentelemetry-sdk").split(".")[:2]) < (1, 45),
                              reason="attribute cleaning as in opentelemetry-sdk 1.45, which pyproject requires")


def every_type(tracer):
    """A span using the whole API with explicit times."""
    parent = tracer.start_span("parent", kind=SpanKind.SERVER, start_time=T0,
                               attributes={"http.route": "/items/<id>", "n": 3})
    ctx = trace.set_span_in_context(parent)
    child = tracer.start_span("child", context=ctx, kind=SpanKind.CLIENT, start_time=T0 + 10,
                              links=[Link(parent.get_span_context(), {"link.attr": True})])
    child.set_attribute("str", "text é")
    child.set_attribute("bool", False)
    child.set_attribute("int", -42)
    child.set_attribute("zero", 0)
    child.set_attribute("float", 2.5)
    child.set_attribute("nan", float("nan"))
    child.set_attribute("bytes", b"\x00\x01")
    child.set_attributes({"strs": ["a", "b"], "ints": (1, 2, 3), "floats": [0.5], "bools": [True, False],
                          "empty": [], "emptystr": ""})
    child.add_event("cache.miss", {"key": "k", "size": 10}, timestamp=T0 + 20)
    child.add_event("bare", timestamp=T0 + 21)
    try:
        raise ValueError("bad value")
    except ValueError as exc:
        child.record_exception(exc, {"extra": 1}, timestamp=T0 + 22)
    child.update_name("child renamed")
    child.set_status(Status(StatusCode.ERROR, "it failed"))
    child.end(end_time=T0 + 30)
    parent.set_status(StatusCode.OK)
    parent.end(end_time=T0 + 40)


@SDK_1_45
def test_payload_is_the_official_encoding(pair):
    p = pair()
    ours_tracer, sdk_tracer = p.tracers("my.lib", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.21.0",
                                        attributes={"scope.attr": "x"})
    every_type(ours_tracer)
    every_type(sdk_tracer)
    ours, theirs = p.ours(), p.theirs()
    assert len(ours) == len(theirs) == 2
    for mine, ref in zip(ours, theirs):
        assert mine.scope == ref.scope
        assert mine.schema_url == ref.schema_url
        (a,), (b,) = mine.spans, ref.spans
        for field in ("trace_id", "span_id", "parent_span_id", "trace_state", "name", "kind",
                      "start_time_unix_nano", "end_time_unix_nano", "dropped_attributes_count",
                      "dropped_events_count", "dropped_links_count", "status", "flags"):
            assert getattr(a, field) == getattr(b, field), field
        assert [(kv.key, kv.value) for kv in a.attributes] == [(kv.key, kv.value) for kv in b.attributes]
        assert list(a.events) == list(b.events)
        assert list(a.links) == list(b.links)
    # and byte for byte: the hand-written encoder writes what protobuf writes
    assert p.payloads() == [ref.SerializeToString() for ref in theirs]


@pytest.mark.parametrize("trace_state", [[], [("vendor", "v1"), ("other", "x")]])
@pytest.mark.parametrize("remote", [True, False])
def test_parent_and_trace_state_as_the_official_encoding(pair, trace_state, remote):
    """A child of a parent with and without a trace state (the ids' fields in one pack or apart)."""
    p = pair()
    parent = trace.SpanContext(0x1234, 0x5678, remote, trace.TraceFlags(1), trace.TraceState(trace_state))

    def scenario(tracer):
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        tracer.start_span("child", context=ctx, start_time=T0).end(end_time=T0 + 1)

    ours_tracer, sdk_tracer = p.tracers("t")
    scenario(ours_tracer)
    scenario(sdk_tracer)
    assert p.payloads() == [ref.SerializeToString() for ref in p.theirs()]
    assert p.ours()[0].spans[0].trace_state == ",".join("%s=%s" % kv for kv in trace_state)


def test_span_fields_as_decoded(pair):
    p = pair()
    tracer, _ = p.tracers("t")
    every_type(tracer)
    child = p.ours()[0].spans[0]
    assert child.name == "child renamed"
    assert child.kind == child.SPAN_KIND_CLIENT
    assert child.status.code == StatusCode.ERROR.value and child.status.message == "it failed"
    assert [e.name for e in child.events] == ["cache.miss", "bare", "exception"]
    exc = {kv.key: kv.value for kv in child.events[2].attributes}
    assert exc["exception.type"].string_value == "ValueError"
    assert "raise ValueError" in exc["exception.stacktrace"].string_value
    # context has is-remote (local parent), sampled, random trace id (the API's flag, from 1.45)
    assert child.flags == 0x100 | 0x01 | int(getattr(trace.TraceFlags, "RANDOM_TRACE_ID", 0))


@SDK_1_45
def test_limits_and_bad_values_as_the_sdk(pair, caplog):
    limits = dict(max_span_attributes=3, max_events=2, max_links=1, max_event_attributes=1,
                  max_link_attributes=1, max_attribute_length=4, max_span_attribute_length=5)
    p = pair(limits=SpanLimits(**limits), sdk_limits=SdkLimits(**limits))

    def scenario(tracer):
        other = trace.SpanContext(7, 8, True, trace.TraceFlags(1))
        span = tracer.start_span("limits", start_time=T0, links=[Link(other, {"a": 1, "b": 2}), Link(other)])
        span.set_attribute("long", "abcdefghij")
        span.set_attribute("list", ["abcdefgh", "x"])
        span.set_attribute("none", None)
        span.set_attribute("mixed", [1, "a", None])
        span.set_attribute(5, "non-str key")
        span.set_attribute("", "empty key")
        span.set_attribute("obj", object())
        span.set_attributes({"x": 1, 7: "seven", "y": 2})
        for i in range(3):
            span.add_event("e%d" % i, {"k": "vvvvvvv", "j": 1}, timestamp=T0 + i)
        span.add_link(other, {"late": 1})
        span.end(end_time=T0 + 9)

    ours_tracer, sdk_tracer = p.tracers("t")
    with caplog.at_level(logging.WARNING):
        scenario(ours_tracer)  # never raises
    assert any("key" in r.getMessage() for r in caplog.records)
    scenario(sdk_tracer)
    (mine,), (ref,) = p.ours(), p.theirs()
    assert mine == ref
    a = mine.spans[0]
    assert a.dropped_attributes_count > 0 and a.dropped_events_count == 1 and a.dropped_links_count == 2


class Key(str):
    """A str subclass as a key: kept, as the SDK keeps it."""


@SDK_1_45
@pytest.mark.parametrize("length", [None, 4])
@pytest.mark.parametrize("bad", [{"": 1}, {7: "seven"}, {object(): 1}, {"none": None}, {"list": ["abcdefgh"]},
                                 {"bytes": b"ab"}, {"obj": object()}, {Key("sub"): "abcdefgh"}, {"long": "abcdefgh"}, {}])
def test_attribute_dicts_cleaned_as_the_sdk(pair, length, bad, caplog):
    """A dict of attributes at start, to set_attributes, one by one, of an event and of a link: valid
    items around one that needs cleaning or dropping, with and without a length limit."""
    limits = dict(max_attribute_length=length, max_span_attribute_length=length)
    p = pair(limits=SpanLimits(**limits), sdk_limits=SdkLimits(**limits))

    def attrs(tag):
        out = {tag + ".a": "GET", tag + ".n": 80, tag + ".b": True, tag + ".s": "abc"}
        out.update(bad)
        out[tag + ".f"] = 0.5
        return out

    def scenario(tracer):
        other = trace.SpanContext(7, 8, True, trace.TraceFlags(1))
        span = tracer.start_span("dicts", start_time=T0, attributes=attrs("start"), links=[Link(other, attrs("link"))])
        span.set_attributes(attrs("later"))
        for key, value in attrs("one").items():
            span.set_attribute(key, value)
        span.add_event("e", attrs("event"), timestamp=T0 + 1)
        span.end(end_time=T0 + 2)

    ours_tracer, sdk_tracer = p.tracers("t")
    with caplog.at_level(logging.WARNING):
        scenario(ours_tracer)
        ours_warned = len(caplog.records)
        caplog.clear()
        scenario(sdk_tracer)
    (mine,), (ref,) = p.ours(), p.theirs()
    assert mine == ref
    assert p.payloads() == [ref.SerializeToString()]
    assert ours_warned == len(caplog.records)  # a warning wherever the SDK warns, and nowhere else


@SDK_1_45
def test_value_and_key_sizes_at_the_encoders_boundaries(pair):
    """Lengths and ints around one- and two-byte varints, where the encoder takes its short cuts."""
    p = pair()

    def scenario(tracer):
        span = tracer.start_span("sizes", start_time=T0)
        for n in (0, 1, 116, 117, 118, 119, 120, 126, 127, 128, 200):
            span.set_attribute("s%d" % n, "x" * n)
        for n in (121, 122, 123, 124, 125):
            span.set_attribute("k" * n, 5)
        for n in (113, 114, 115, 116):
            span.set_attribute("f" * n, 0.5)
        for i in (127, 128, 16383, 16384, 2 ** 31, 2 ** 63 - 1, -1, -(2 ** 63)):
            span.set_attribute("i%d" % i, i)
        span.add_event("e", {"k" * 130: 130, "s": "é" * 70}, timestamp=T0 + 1)
        span.end(end_time=T0 + 2)

    ours_tracer, sdk_tracer = p.tracers("t")
    scenario(ours_tracer)
    scenario(sdk_tracer)
    (mine,), (ref,) = p.ours(), p.theirs()
    assert [(kv.key, kv.value) for kv in mine.spans[0].attributes] == [(kv.key, kv.value) for kv in ref.spans[0].attributes]
    assert p.payloads() == [ref.SerializeToString() for ref in p.theirs()]


@SDK_1_45
def test_repeated_pairs_encode_as_the_first_time(pair, monkeypatch):
    """Values equal as dict keys but of other types (1, 1.0, True, "1") under one key never share an
    encoding, and the bounded cache of str pairs gives the same bytes warm, cold and emptied."""
    monkeypatch.setattr(otlp, "MAX_STR_FIELDS", 3)
    monkeypatch.setattr(otlp, "STR_FIELDS", {})  # cold, whatever earlier tests left in it
    p = pair()
    values = ["1", 1, True, 1.0, "True", "1", "é", "x" * 120, "1"]

    def scenario(tracer):
        for i in range(3):
            for j, value in enumerate(values):
                span = tracer.start_span("s", start_time=T0, attributes={"k": value})
                span.set_attribute("k%d" % (i % 2), value)
                span.add_event("e", {"k": value}, timestamp=T0 + 1)
                span.end(end_time=T0 + 2)
                assert len(otlp.STR_FIELDS) <= 3

    ours_tracer, sdk_tracer = p.tracers("t")
    scenario(ours_tracer)
    scenario(sdk_tracer)
    assert p.payloads() == [ref.SerializeToString() for ref in p.theirs()]


def test_limits_from_env_are_the_sdks(monkeypatch):
    env = {"OTEL_ATTRIBUTE_COUNT_LIMIT": "9", "OTEL_SPAN_EVENT_COUNT_LIMIT": "3", "OTEL_SPAN_LINK_COUNT_LIMIT": "",
           "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT": "2", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "12"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ours, ref = SpanLimits.from_env(), SdkLimits()
    for field in ("max_span_attributes", "max_events", "max_links", "max_event_attributes", "max_link_attributes",
                  "max_attribute_length", "max_span_attribute_length"):
        assert getattr(ours, field) == getattr(ref, field), field


def test_bad_limit_is_reported_not_raised(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "many")
    with caplog.at_level(logging.WARNING):
        assert SpanLimits.from_env().max_events == 128
    assert "OTEL_SPAN_EVENT_COUNT_LIMIT" in caplog.text and "many" in caplog.text


def ping(n):
    """Mutual recursion: a long stack trace that Python does not fold into "[Previous line repeated]"."""
    if n == 0:
        raise RuntimeError("deep")
    pong(n - 1)


def pong(n):
    ping(n)


def deep_exception(frames):
    try:
        ping(frames)
    except RuntimeError as exc:
        return exc


def _huge(tracer):
    span = tracer.start_span("huge", start_time=T0)
    for i in range(90):  # about 5 KB of attributes alone
        span.set_attribute("attr.%02d" % i, "v" * 45)
    span.record_exception(deep_exception(100), timestamp=T0 + 1)
    span.end(end_time=T0 + 2)


def test_oversized_span_is_cut_and_counted(pair):
    p = pair()
    tracer, _ = p.tracers("t")
    _huge(tracer)
    (payload,) = p.payloads()
    assert len(payload) <= MAX_BYTES
    span = ScopeSpans.FromString(payload).spans[0]
    # the stack trace went first; still too big, the event went; then the oldest attributes
    assert span.dropped_events_count == 1 and not span.events
    assert span.dropped_attributes_count > 0
    assert len(span.attributes) + span.dropped_attributes_count == 90
    assert span.attributes[-1].key == "attr.89"


def test_long_stacktrace_alone_is_cut_with_a_marker(pair):
    p = pair()
    tracer, _ = p.tracers("t")
    span = tracer.start_span("s", start_time=T0)
    exc = deep_exception(100)
    assert len("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))) > 2 * MAX_BYTES
    span.record_exception(exc, timestamp=T0 + 1)
    span.end(end_time=T0 + 2)
    (payload,) = p.payloads()
    assert len(payload) <= MAX_BYTES
    span = ScopeSpans.FromString(payload).spans[0]
    assert span.dropped_events_count == 0 and len(span.events) == 1
    stack = {kv.key: kv.value.string_value for kv in span.events[0].attributes}["exception.stacktrace"]
    head = CUT_MARKER.split("{}")[0]
    assert stack.startswith(head)
    cut = int(stack[len(head):].split(" ")[0])
    assert cut > 0 and stack.rstrip().endswith("RuntimeError: deep")


def test_int_beyond_int64_left_out_with_a_warning(pair, caplog):
    p = pair()
    tracer, _ = p.tracers("t")
    span = tracer.start_span("s")
    span.set_attribute("big", 1 << 70)
    span.set_attribute("ok", 1)
    with caplog.at_level(logging.WARNING):
        span.end()
    (mine,) = p.ours()
    assert [kv.key for kv in mine.spans[0].attributes] == ["ok"]
    assert "big" in caplog.text


def test_huge_names_are_cut_last(pair):
    """Whatever the application passes, the payload fits: a huge name and scope name are cut to NAME_CAP."""
    from spanprobe.otel.payload import NAME_CAP

    p = pair()
    tracer = p.provider.get_tracer("s" * 10_000, "v" * 5_000)
    span = tracer.start_span("n" * 10_000, attributes={"big": "x" * 10_000})
    span.add_event("e" * 5_000)
    span.end()
    (payload,) = p.payloads()
    assert len(payload) <= MAX_BYTES
    (mine,) = p.ours()
    s = mine.spans[0]
    assert s.name == "n" * NAME_CAP and mine.scope.name == "s" * NAME_CAP and mine.scope.version == "v" * NAME_CAP
    assert (s.dropped_attributes_count, s.dropped_events_count) == (1, 1) and not s.attributes and not s.events


class Shown(str):
    """A str subclass whose str() is not its text: OTLP carries the text (protobuf takes the data)."""

    def __str__(self):
        return "shown"


@SDK_1_45
@pytest.mark.parametrize("where", ["start", "set", "event", "link"])
def test_unencodable_text_leaves_out_only_its_attribute(pair, where, caplog):
    """A lone surrogate in a key or a str value cannot be UTF-8: that attribute is left out with a warning,
    as the official encoder does, and the span, its event, its other attributes stay. A str subclass
    is encoded by its text (key and value), whatever its __str__ says."""
    p = pair()
    bad = {"ok": "fine", "\ud800": "v", "k": "\udc80", "sub": Shown("text"), Shown("subkey"): 1, "last": 2}

    def scenario(tracer):
        other = trace.SpanContext(7, 8, True, trace.TraceFlags(1))
        span = tracer.start_span("surrogates", start_time=T0, attributes=bad if where == "start" else None,
                                 links=[Link(other, bad)] if where == "link" else ())
        if where == "set":
            span.set_attributes(bad)
        span.add_event("e", bad if where == "event" else {"x": 1}, timestamp=T0 + 1)
        span.end(end_time=T0 + 2)

    ours_tracer, sdk_tracer = p.tracers("t")
    with caplog.at_level(logging.WARNING, logger="spanprobe.otel"):
        scenario(ours_tracer)
    scenario(sdk_tracer)
    (mine,), (ref,) = p.ours(), p.theirs()
    assert mine == ref and p.payloads() == [ref.SerializeToString()]
    span = mine.spans[0]
    kept = (span.events[0].attributes if where == "event" else span.links[0].attributes if where == "link"
            else span.attributes)
    assert [kv.key for kv in kept] == ["ok", "sub", "subkey", "last"] and kept[1].value.string_value == "text"
    assert caplog.text.count("left out of the span") == 2


@SDK_1_45
@pytest.mark.parametrize("attributes", [{"": "v", "a": "b"}, {"a": None}, {"a": [1, "x"]}, {7: "x"},
                                        {"a": "x" * 300}, {Shown("k"): Shown("v")}])
def test_scope_attributes_cleaned_as_the_sdk(pair, attributes):
    """get_tracer's attributes: what the SDK keeps, drops or converts, in the exported scope."""
    p = pair()
    for tracer in p.tracers("t", attributes=attributes):
        tracer.start_span("s", start_time=T0).end(end_time=T0 + 1)
    (mine,), (ref,) = p.ours(), p.theirs()
    assert mine == ref and p.payloads() == [ref.SerializeToString()]


def test_scope_attributes_not_a_mapping_are_left_out(pair, caplog):
    """Where the SDK would raise into the application, a warning and a scope without attributes."""
    p = pair()
    tracer = p.provider.get_tracer("t", attributes=["not", "a", "mapping"])
    tracer.start_span("s", start_time=T0).end(end_time=T0 + 1)
    (mine,) = p.ours()
    assert mine.scope.name == "t" and not mine.scope.attributes
    assert "get_tracer attributes ['not', 'a', 'mapping'] are not a mapping; left out" in caplog.text
