"""spanprobe.otel's TracerProvider: how it is chosen, and what it does untraced and traced."""

import os
import subprocess
import sys

from opentelemetry import context, trace
from opentelemetry.trace import NonRecordingSpan

from spanprobe.otel import TracerProvider
from spanprobe.otel import tracer as tracer_mod


def test_chosen_by_the_apis_entry_point():
    """OTEL_PYTHON_TRACER_PROVIDER=spanprobe: the API itself loads ours (a fresh process: the global is set once)."""
    code = ("from opentelemetry import trace; import spanprobe.otel as o; "
            "p = trace.get_tracer_provider(); assert isinstance(p, o.TracerProvider), p; "
            "t = trace.get_tracer('x'); assert isinstance(t, o.Tracer), t; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], env={"OTEL_PYTHON_TRACER_PROVIDER": "spanprobe",
                                                           "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_untraced_spans_do_not_record_but_propagate(pair):
    p = pair()
    p.recorder.set_enabled(False)
    tracer, _ = p.tracers("t")
    with tracer.start_as_current_span("root", attributes={"a": 1}) as root:
        assert not root.is_recording()
        root_ctx = root.get_span_context()
        assert root_ctx.is_valid and root_ctx.trace_flags.sampled
        assert trace.get_current_span() is root
        with tracer.start_as_current_span("child") as child:
            # untraced children hand on their parent: no ids for spans nobody records
            assert child.get_span_context() == root_ctx
        child = tracer.start_span("explicit")
        child.set_attribute("x", 1)
        child.add_event("e")
        child.end()
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert p.payloads() == []


def test_traced_spans_nest_and_fire_once_each(pair):
    p = pair()
    tracer, _ = p.tracers("t")
    with tracer.start_as_current_span("root") as root:
        assert root.is_recording()
        with tracer.start_as_current_span("child") as child:
            assert child.parent == root.get_span_context()
            assert child.get_span_context().trace_id == root.get_span_context().trace_id
    root.end()  # a second end is a warning, not a second span
    names = [s.spans[0].name for s in p.ours()]
    assert names == ["child", "root"]


def test_span_started_untraced_is_never_fired(pair):
    """A tracer attaching mid-span sees no half span; one leaving mid-span gets nothing."""
    p = pair()
    tracer, _ = p.tracers("t")
    p.recorder.set_enabled(False)
    before = tracer.start_span("before attach")
    p.recorder.set_enabled(True)
    before.end()
    during = tracer.start_span("before detach")
    p.recorder.set_enabled(False)
    during.end()
    assert p.payloads() == []


def test_exception_in_with_block_as_the_sdk(pair):
    p = pair()
    for t in p.tracers("t"):
        try:
            with t.start_as_current_span("boom"):
                raise KeyError("missing")
        except KeyError:
            pass
    (mine,), (ref,) = p.ours(), p.theirs()
    a, b = mine.spans[0], ref.spans[0]
    assert a.status == b.status and a.status.message == "KeyError: 'missing'"
    ea = {kv.key: kv.value for kv in a.events[0].attributes}
    eb = {kv.key: kv.value for kv in b.events[0].attributes}
    assert ea.keys() == eb.keys()
    for key in ("exception.type", "exception.message", "exception.escaped"):
        assert ea[key] == eb[key], key
    assert ea["exception.stacktrace"].string_value.splitlines()[-2:] == \
        eb["exception.stacktrace"].string_value.splitlines()[-2:]


def test_decorator_and_async_decorator(pair):
    import asyncio

    p = pair()
    tracer, _ = p.tracers("t")

    @tracer.start_as_current_span("sync")
    def f(x):
        return trace.get_current_span().get_span_context().span_id, x

    @tracer.start_as_current_span("async")
    async def g():
        await asyncio.sleep(0)
        return trace.get_current_span().is_recording()

    ids = {f(1)[0], f(2)[0]}
    assert len(ids) == 2  # a new span per call
    assert asyncio.run(g()) is True
    assert [s.spans[0].name for s in p.ours()] == ["sync", "sync", "async"]


def test_one_probe_shared_by_every_provider():
    a = TracerProvider().get_tracer("a")
    b = TracerProvider().get_tracer("b")
    assert a.probe is b.probe is tracer_mod.span_probe()
    schema = a.probe.provider.schema()
    assert schema["probes"] == [{"name": "span", "role": "otel_span", "args": [{"name": "span", "type": "bytes"}]}]


def test_a_scope_asked_for_again_gets_the_same_tracer(pair, caplog):
    p = pair()
    provider = p.provider
    a = provider.get_tracer("lib", "1.0", "https://schema")
    assert provider.get_tracer("lib", "1.0", "https://schema") is a
    assert provider.get_tracer("lib", "2.0", "https://schema") is not a
    with_attributes = provider.get_tracer("lib", "1.0", "https://schema", {"k": "v"})
    assert with_attributes is not a and with_attributes.scope[3] == {"k": "v"}
    odd = provider.get_tracer(7, ["not", "a", "str"], {"nor": "this"})  # reported, never raised
    assert odd.scope[:3] == ("7", None, None) and provider.get_tracer("7") is odd
    for tracer in (a, provider.get_tracer("lib", "1.0", "https://schema"), with_attributes):
        tracer.start_span("s").end()
    scopes = [(s.scope.name, s.scope.version, s.schema_url, len(s.scope.attributes)) for s in p.ours()]
    assert scopes == [("lib", "1.0", "https://schema", 0)] * 2 + [("lib", "1.0", "https://schema", 1)]
    assert "version ['not', 'a', 'str'] is not a str" in caplog.text


def test_explicit_context_parent(pair):
    p = pair()
    tracer, _ = p.tracers("t")
    remote = trace.SpanContext(0xABC, 0xDEF, True, trace.TraceFlags(1))
    ctx = trace.set_span_in_context(NonRecordingSpan(remote))
    token = context.attach(ctx)
    try:
        span = tracer.start_span("server")
    finally:
        context.detach(token)
    span.end()
    (mine,) = p.ours()
    s = mine.spans[0]
    assert s.parent_span_id == (0xDEF).to_bytes(8, "big") and s.trace_id == (0xABC).to_bytes(16, "big")
    assert s.flags == 0x300 | 0x01  # remote parent; sampled, as the parent was (no random flag)


def _run(code, **env):
    full = {"PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin"}
    full.update(env)
    return subprocess.run(code, env=full, capture_output=True, text=True, timeout=120)


CHECK = ("from opentelemetry import trace; import spanprobe.otel as o; "
         "p = trace.get_tracer_provider(); print(type(p).__module__ + '.' + type(p).__name__)")


def test_opentelemetry_instrument_with_the_distro_installed():
    """opentelemetry-distro really installed: its configurator installs the SDK unless ours is named."""
    from importlib.metadata import distribution
    assert distribution("opentelemetry-distro")  # the case under test
    instrument = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    sdk = _run([instrument, sys.executable, "-c", CHECK], OTEL_PYTHON_TRACER_PROVIDER="spanprobe",
               OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    assert sdk.stdout.strip() == "opentelemetry.sdk.trace.TracerProvider", sdk.stderr
    ours = _run([instrument, sys.executable, "-c", CHECK], OTEL_PYTHON_CONFIGURATOR="spanprobe")
    assert ours.stdout.strip() == "spanprobe.otel.tracer.TracerProvider", ours.stderr


def test_nonsense_never_raises_into_the_application(pair, caplog):
    p = pair()
    tracer, _ = p.tracers("t")
    span = tracer.start_span("s", attributes=["not", "a", "mapping"], links=[None])
    span.set_attributes(42)
    span.add_event("e", attributes="nope")
    span.add_event(123)  # not a name: dropped and counted
    span.add_event(None)  # no name: an event without one
    span.set_status("bogus")
    span.update_name(None)
    span.end()
    span.end()
    (ours,) = p.ours()
    assert ours.spans[0].dropped_events_count == 1 and [e.name for e in ours.spans[0].events] == ["e", ""]
    assert "not a mapping" in caplog.text and "event 123 dropped" in caplog.text
