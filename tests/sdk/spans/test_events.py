"""Events: plain calls and the call_event decorator, tied to the enclosing span."""

import pytest

import spanprobe
from spanprobe.errors import DeclarationError
from spanprobe.testing import Recorder


@pytest.fixture
def provider():
    return spanprobe.Provider("eventtest")


def test_event_outside_and_inside_a_span(provider):
    miss = provider.event("cache.miss", {"cache.key": str}, size="u32")
    assert miss.probe.name == "cache_miss"
    assert [(a.name, a.type.value) for a in miss.probe.args][4:] == [("cache.key", "str"), ("size", "u32")]

    @provider.span("lookup")
    def lookup(key):
        miss(key, size=3)

    miss.fire("cold", 1)  # nothing attached: a semaphore test, nothing recorded
    rec = Recorder(provider)
    miss.fire("alone", lambda: 9)
    lookup("k")
    alone, inside = rec.of("cache_miss")
    assert alone == {"probe": "cache_miss", "span_id": 0, "trace_id_high": 0, "trace_id_low": 0,
                     "flags": 0, "cache.key": "alone", "size": 9}
    (start,) = rec.of("lookup__start")
    assert inside["span_id"] == start["span_id"]
    assert (inside["trace_id_high"], inside["trace_id_low"]) == (start["trace_id_high"], start["trace_id_low"])
    assert inside["flags"] == 1 and inside["cache.key"] == "k"
    assert provider.schema_events == [{"name": "cache.miss", "probe": "cache_miss"}]


def test_event_conversion_failure_and_wrong_calls(provider):
    ev = provider.event("e", n="u8", s=str)
    rec = Recorder(provider)
    ev.fire(256, lambda: 1 / 0)
    (hit,) = rec.hits
    assert hit["flags"] == (1 << 8) | (1 << 9) and hit["n"] == 0 and hit["s"] == ""
    with pytest.raises(TypeError):
        ev.fire(1)  # a wrong call fails like any call, traced or not


def test_event_inside_opentelemetry_span(provider):
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    tracer = sdk_trace.TracerProvider().get_tracer("test")
    ev = provider.event("ping")
    rec = Recorder(provider)
    with tracer.start_as_current_span("app") as span:
        ev()
    sc = span.get_span_context()
    (hit,) = rec.hits
    assert hit["span_id"] == sc.span_id
    assert (hit["trace_id_high"] << 64) | hit["trace_id_low"] == sc.trace_id


def test_call_event_decorator(provider):
    class Cache:
        @provider.call_event("cache.evict", attributes={"key": ("cache.key", str)},
                             computed={"key.length": ("u32", lambda self, key: len(key))})
        def evict(self, key):
            """Evict."""
            return key.upper()

    @provider.call_event
    async def tick():
        return 1

    rec = Recorder(provider)
    assert Cache().evict("abc") == "ABC" and Cache.evict.__doc__ == "Evict."
    (hit,) = rec.of("cache_evict")
    assert (hit["cache.key"], hit["key.length"], hit["span_id"]) == ("abc", 3, 0)
    import asyncio
    import inspect
    assert inspect.iscoroutinefunction(tick) and asyncio.run(tick()) == 1
    assert len(rec.of(provider.schema_events[-1]["probe"])) == 1


def test_event_declaration_errors(provider):
    with pytest.raises(DeclarationError, match="at most 8"):
        provider.event("big", {f"a{i}": int for i in range(9)})
    with pytest.raises(DeclarationError, match="not a probe argument type"):
        provider.event("bad", x=list)
    provider.event("dup")
    with pytest.raises(DeclarationError, match="already has a probe"):
        provider.event("dup")
    with pytest.raises(DeclarationError, match="not callable"):
        provider.call_event("x")(3)
