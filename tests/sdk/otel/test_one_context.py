"""One context with OpenTelemetry, status and handled exceptions, propagation: decorator and block spans.

Without BPF: spanprobe.testing.Recorder stands in for the tracer.
"""

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

import spanprobe
from spanprobe.abi.protocol import STATUS_ERROR, STATUS_SET_ERROR, STATUS_SET_OK
from spanprobe.spans import propagation, status
from spanprobe.testing import Recorder


def ids_of(otel_span):
    sc = otel_span.get_span_context()
    return sc.trace_id, sc.span_id


@pytest.fixture
def record():
    """record(provider): a Recorder on the probes ``provider`` has declared so far (declare first)."""
    made = []

    def make(provider):
        made.append(Recorder(provider))
        return made[-1]
    yield make
    for r in made:
        r.set_enabled(False)


def test_decorator_span_is_opentelemetrys_current_span(provider, record, pair):
    p = pair()
    otel_tracer, _ = p.tracers("t")
    seen = {}

    @provider.span("outer")
    def outer():
        seen["current"] = ids_of(trace.get_current_span())
        headers = {}
        propagate.inject(headers)
        seen["traceparent"] = headers["traceparent"]
        with otel_tracer.start_as_current_span("otel child") as child:
            seen["child_parent"] = child.parent.span_id
            inner()

    @provider.span("inner")
    def inner():
        seen["inner"] = ids_of(trace.get_current_span())

    rec = record(provider)
    outer()
    (start,) = rec.of("outer__start")
    trace_id = start["trace_id_high"] << 64 | start["trace_id_low"]
    span_id = start["span_id"]
    assert seen["current"] == (trace_id, span_id)
    assert seen["traceparent"] == "00-%032x-%016x-01" % (trace_id, span_id)
    assert seen["child_parent"] == span_id
    # a spanprobe span inside the OpenTelemetry span hangs from it: the innermost of both kinds
    otel_child = p.ours()[0].spans[0]
    (inner_start,) = rec.of("inner__start")
    assert inner_start["parent_span_id"] == int.from_bytes(otel_child.span_id, "big")
    assert trace.get_current_span() is trace.INVALID_SPAN  # restored


def test_untraced_decorator_span_leaves_opentelemetry_alone(provider, record):
    seen = []

    @provider.span("quiet")
    def quiet():
        seen.append(trace.get_current_span())

    record(provider).set_enabled(False)
    quiet()
    assert seen == [trace.INVALID_SPAN]


def test_block_span_too_and_restored_after_an_exception(provider, record):
    block = provider.span_block("blk")
    record(provider)
    with pytest.raises(KeyError):
        with block():
            assert trace.get_current_span().get_span_context().is_valid
            raise KeyError("x")
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_set_status_error_ok_and_an_exception_deciding(provider, record):
    @provider.span("checked")
    def checked(how):
        if how == "error":
            spanprobe.set_status("error", "card declined")
        elif how == "ok-final":
            spanprobe.set_status(trace.StatusCode.OK)
            spanprobe.set_status("error", "ignored: OK is final")
        elif how == "raise":
            spanprobe.set_status("error", "superseded")
            raise ValueError("boom")
        elif how == "otel-status":
            spanprobe.set_status(trace.Status(trace.StatusCode.ERROR, "from Status"))

    rec = record(provider)
    for how in ("error", "ok-final", "otel-status", "plain"):
        checked(how)
    with pytest.raises(ValueError):
        checked("raise")
    ends = rec.of("checked__end")
    assert [(e["status"], e["error_message"]) for e in ends] == [
        (STATUS_SET_ERROR, "card declined"), (STATUS_SET_OK, ""), (STATUS_SET_ERROR, "from Status"), (0, ""),
        (STATUS_ERROR, "boom")]
    from spanprobe.spans import context
    assert context.statuses == {}  # nothing left behind


def test_set_status_outside_a_span_or_with_nonsense_does_nothing(provider, record, caplog):
    spanprobe.set_status("error", "no span")  # no current span: nothing, no error

    @provider.span("s")
    def s():
        spanprobe.set_status(42)

    rec = record(provider)
    s()
    assert rec.of("s__end")[0]["status"] == 0 and "not a status" in caplog.text


def test_record_exception_fires_an_exception_event_on_the_span(provider, record):
    event = status.exception_event()
    erec = record(event.probe.provider)
    if True:  # one scope with the Recorder on spanprobe's own provider
        @provider.span("handler")
        def handler():
            try:
                raise LookupError("no such item")
            except LookupError as exc:
                spanprobe.record_exception(exc)

        rec = record(provider)
        handler()
        (hit,) = erec.of(event.probe.name)
        (start,) = rec.of("handler__start")
        assert hit["span_id"] == start["span_id"]
        assert hit["exception.type"] == "LookupError" and hit["exception.message"] == "no such item"
        assert hit["exception.stacktrace"].startswith("Traceback") and "raise LookupError" in hit["exception.stacktrace"]
        assert hit["exception.escaped"] == "False"
        spanprobe.record_exception(ValueError("outside any span"))
        assert len(erec.of(event.probe.name)) == 1


@pytest.mark.parametrize("with_otel", [True, False])
def test_continue_trace_and_inject(provider, record, monkeypatch, with_otel):
    if not with_otel:
        monkeypatch.setattr(propagation, "_otel", lambda: None)
    incoming = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    out = {}

    @provider.span("handle")
    def handle():
        spanprobe.inject(out)

    rec = record(provider)
    with spanprobe.continue_trace(incoming):
        handle()
    (start,) = rec.of("handle__start")
    assert start["trace_id_high"] << 64 | start["trace_id_low"] == 0x0af7651916cd43dd8448eb211c80319c
    assert start["parent_span_id"] == 0xb7ad6b7169203331
    assert out["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-%016x-01" % start["span_id"]
    assert otel_context.get_current() == otel_context.Context() or with_otel is False


@pytest.mark.parametrize("bad", ["", "garbage", "00-" + "0" * 32 + "-b7ad6b7169203331-01",
                                 "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"])
def test_bad_traceparent_is_ignored(bad):
    assert propagation.parse_traceparent(bad) is None


def test_status_and_exceptions_inside_continue_trace_alone_go_nowhere(monkeypatch):
    """Inside continue_trace but outside any span of this process (no opentelemetry-api), the current
    span is the remote parent: set_status and record_exception have no span to mark, and keep nothing."""
    from spanprobe.spans import context

    monkeypatch.setattr(propagation, "_otel", lambda: None)
    incoming = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    before = dict(context.statuses)
    for _ in range(100):
        with spanprobe.continue_trace(incoming):
            spanprobe.set_status("error", "no local span")
            spanprobe.record_exception(ValueError("no local span"))
    assert context.statuses == before


@pytest.mark.parametrize("headers", [[("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
                                     None, 42])
def test_headers_propagators_cannot_read_are_ignored_not_raised(headers):
    """An ASGI scope's list of pairs, or no mapping at all: opentelemetry's getter raises on them;
    continue_trace and inject ignore them, as documented."""
    with spanprobe.continue_trace(headers):
        pass
    spanprobe.inject(headers)


def test_an_unusable_propagator_setting_falls_back_to_traceparent(monkeypatch):
    """OTEL_PROPAGATORS naming a propagator that is not installed makes importing opentelemetry.propagate
    raise: continue_trace and inject fall back to W3C traceparent instead of raising into the app."""
    import sys as _sys

    import opentelemetry

    monkeypatch.setenv("OTEL_PROPAGATORS", "nosuch")
    monkeypatch.delitem(_sys.modules, "opentelemetry.propagate", raising=False)
    monkeypatch.delattr(opentelemetry, "propagate", raising=False)
    with pytest.raises(Exception):  # what the application would otherwise meet
        from opentelemetry import propagate  # noqa: F401
    incoming = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with spanprobe.continue_trace(incoming):
        out = {}
        spanprobe.inject(out)
    assert out == {"traceparent": incoming["traceparent"]}


def test_the_span_in_opentelemetrys_context_matches_a_non_recording_span(provider, record):
    """The light span a traced span puts in OpenTelemetry's context answers like opentelemetry-api's own
    NonRecordingSpan with the span's ids, field by field; a spanprobe span nested in it hangs from it."""
    seen = {}

    @provider.span("outer")
    def outer():
        seen["outer"] = trace.get_current_span()
        inner()

    @provider.span("inner")
    def inner():
        seen["inner"] = trace.get_current_span()

    rec = record(provider)
    outer()
    (start,) = rec.of("outer__start")
    (inner_start,) = rec.of("inner__start")
    assert inner_start["parent_span_id"] == start["span_id"]
    assert inner_start["trace_id_low"] == start["trace_id_low"]
    assert inner_start["trace_id_high"] == start["trace_id_high"]
    for name, s in (("outer", start), ("inner", inner_start)):
        ours = seen[name]
        official = trace.NonRecordingSpan(trace.SpanContext(
            s["trace_id_high"] << 64 | s["trace_id_low"], s["span_id"], False, trace.TraceFlags(s["flags"])))
        sc, osc = ours.get_span_context(), official.get_span_context()
        assert isinstance(ours, trace.Span)
        for field in ("trace_id", "span_id", "is_remote", "trace_flags", "trace_state", "is_valid"):
            assert getattr(sc, field) == getattr(osc, field), field
        assert sc == osc and ours.get_span_context() is sc  # made once, when asked
        assert ours.is_recording() is official.is_recording() is False
        for span in (ours, official):  # the same no-op surface, with the API's signatures
            span.set_attribute("k", 1), span.set_attributes({"k": 1}), span.add_event("e", {"k": 1}, 5)
            span.add_link(osc, {}), span.update_name("n"), span.set_status(trace.StatusCode.ERROR, "d")
            span.record_exception(ValueError("x"), {}, 5, True), span.end(7)
        assert ours.get_span_context() == osc


def test_a_misbehaving_current_span_is_no_parent_and_never_raises(provider, record):
    """An OpenTelemetry span whose get_span_context raises: the traced span starts a trace of its own, is
    still OpenTelemetry's current span inside, and the Context is restored after."""
    class Broken(trace.NonRecordingSpan):
        def get_span_context(self):
            raise RuntimeError("broken span")

    seen = []

    @provider.span("under_broken")
    def under_broken():
        seen.append(trace.get_current_span().get_span_context())
        return 5

    rec = record(provider)
    token = otel_context.attach(trace.set_span_in_context(Broken(trace.INVALID_SPAN_CONTEXT)))
    try:
        before = otel_context.get_current()
        assert under_broken() == 5
        assert otel_context.get_current() is before
    finally:
        otel_context.detach(token)
    (start,) = rec.of("under_broken__start")
    assert start["parent_span_id"] == 0
    assert seen[0].span_id == start["span_id"] and seen[0].is_valid
