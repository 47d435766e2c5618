"""Span decorators without BPF: what they preserve, refuse, and fire.

The probe sites are replaced by recorders (spanprobe.testing); real BPF runs
in test_span_bpf.py.
"""

import asyncio
import inspect
import typing

import pytest

from spanprobe.errors import DeclarationError, ProviderStateError
from spanprobe.spans import context
from spanprobe.testing import Recorder
from tests.support.sdk import start_end


class MyError(Exception):
    pass


# --- what decoration preserves -------------------------------------------------------


def test_decorated_function_keeps_name_doc_signature(provider):
    def handle(method: str, code: int = 200, *rest, flag: bool = False, **extra) -> int:
        """Handle it."""
        return code

    wrapped = provider.span(attributes=("method", "code"))(handle)
    assert wrapped.__name__ == "handle" and wrapped.__doc__ == "Handle it."
    assert wrapped.__qualname__ == handle.__qualname__ and wrapped.__wrapped__ is handle
    assert inspect.signature(wrapped) == inspect.signature(handle)
    assert wrapped.__defaults__ == handle.__defaults__ and wrapped.__kwdefaults__ == handle.__kwdefaults__
    assert wrapped("GET", 201, 1, 2, flag=True, x=1) == 201
    assert wrapped("GET") == 200


def test_positional_only_and_keyword_only_are_forwarded(provider):
    @provider.span(attributes=("a", "k"))
    def f(a: int, /, b, *, k: str):
        return a, b, k

    assert f(1, 2, k="x") == (1, 2, "x")
    with pytest.raises(TypeError):
        f(a=1, b=2, k="x")  # still positional-only, like the original


def test_async_function_stays_a_coroutine_function(provider):
    @provider.span
    async def fetch(x):
        await asyncio.sleep(0)
        return x * 2

    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(fetch(4)) == 8


def test_methods_classmethods_staticmethods(provider):
    class Svc:
        factor = 3

        @provider.span(attributes=("x",))
        def method(self, x: int):
            return x * self.factor

        @provider.span()
        @classmethod
        def outer_classmethod(cls, x):
            return cls.factor + x

        @classmethod
        @provider.span()
        def inner_classmethod(cls, x):
            return cls.factor - x

        @provider.span()
        @staticmethod
        def outer_static(x):
            return -x

        @staticmethod
        @provider.span()
        def inner_static(x):
            return x

    s = Svc()
    assert s.method(2) == 6 and Svc.method(s, 2) == 6
    assert Svc.outer_classmethod(1) == 4 and s.inner_classmethod(1) == 2
    assert Svc.outer_static(5) == -5 and s.inner_static(5) == 5
    names = [span["name"] for span in provider.schema_spans]
    assert any(n.endswith("Svc.method") for n in names)
    assert len(provider.schema_spans) == 5


def test_span_without_parentheses_uses_qualname(provider):
    @provider.span
    def plain():
        return 1

    assert plain() == 1
    entry = provider.schema_spans[0]
    assert entry["name"] == plain.__qualname__
    assert entry["start"].endswith("__start") and entry["end"].endswith("__end")
    assert entry["code"]["function"] == f"{__name__}.{plain.__qualname__}"
    assert entry["code"]["lineno"] == plain.__wrapped__.__code__.co_firstlineno


# --- what decoration refuses ---------------------------------------------------------


@pytest.mark.parametrize("thing, message", [
    (42, "not callable"),
    ("text", "not callable"),
    (MyError, "cannot decorate the class"),
])
def test_refuses_what_is_not_a_function(provider, thing, message):
    with pytest.raises(DeclarationError, match=message):
        provider.span("x")(thing)


def test_refuses_generators(provider):
    def gen():
        yield 1

    async def agen():
        yield 1

    for f in (gen, agen):
        with pytest.raises(DeclarationError, match="generator"):
            provider.span()(f)
    assert provider.probes == {}


@pytest.mark.parametrize("kwargs, message", [
    ({"attributes": ("nope",)}, "'nope' is not a parameter"),
    ({"attributes": ("args",)}, "'args' is not a parameter that can be captured"),
    ({"attributes": ("untyped",)}, "has no annotation"),
    ({"attributes": ("obj",)}, "which a probe cannot carry"),
    ({"attributes": {"untyped": list}}, "not a probe argument type"),
    ({"attributes": {"untyped": "u128"}}, "not a probe argument type"),
    ({"kind": "sideways"}, "kind 'sideways'"),
    ({"computed": {"c": str}}, "must be \\(type, callable\\)"),
    ({"record_return": dict}, "not a probe argument type"),
    ({"attributes": {"untyped": ("span_id", "u64")}}, "reserved by the span protocol"),
])
def test_bad_declarations_fail_at_decoration(provider, kwargs, message):
    def f(untyped, obj: object, *args, **kwargs):
        pass

    with pytest.raises(DeclarationError, match=message):
        provider.span(**kwargs)(f)
    assert provider.probes == {}, "a refused span leaves no probes behind"


def test_reserved_parameter_names(provider):
    def f(_sp_f):
        pass

    with pytest.raises(DeclarationError, match="reserved"):
        provider.span()(f)
    assert provider.probes == {}


def test_too_many_attributes(provider):
    with pytest.raises(DeclarationError, match="at most 7"):
        provider.span("many", computed={f"a{i}": (int, lambda: 0) for i in range(8)})(lambda: None)


def test_name_collision_is_clear(provider):
    provider.span("a.b")(lambda: None)
    with pytest.raises(DeclarationError, match="already has"):
        provider.span("a_b")(lambda: None)


def test_long_names_are_cut_to_unique_identifiers(provider):
    long1, long2 = "x" * 100 + "1", "x" * 100 + "2"
    provider.span(long1)(lambda: None)
    provider.span(long2)(lambda: None)
    names = list(provider.probes)
    assert len(set(names)) == 6 and all(len(n) <= 64 for n in names)


def test_declaring_after_load_fails(provider):
    provider.load()
    try:
        with pytest.raises(ProviderStateError):
            provider.span("late")(lambda: None)
    finally:
        provider.unload()


def test_types_from_annotations(provider):
    @provider.span(attributes=True, record_return=float)
    def f(self, a: int, b: "str", c: typing.Optional[bool], d: bytes, e: float):
        return 1.0

    span = f.__spanprobe_span__
    args = {a.name: a.type.value for a in span.start.args}
    assert args == {"span_id": "u64", "parent_span_id": "u64", "trace_id_high": "u64",
                    "trace_id_low": "u64", "flags": "u32",
                    "a": "i64", "b": "str", "c": "bool", "d": "bytes", "e": "f64"}
    end = [(a.name, a.type.value) for a in span.end.args]
    assert end == [("span_id", "u64"), ("status", "u8"), ("error_type", "str"),
                   ("error_message", "str"), ("flags", "u32"), ("result", "f64")]


# --- traced --------------------------------------------------------------------------


def test_nested_spans_link_parent_and_trace(provider):
    @provider.span("outer", attributes=("n",), record_return="u32")
    def outer(n: int):
        return inner("x") + n

    @provider.span("inner", attributes={"s": ("text.value", str)})
    def inner(s):
        assert context.current_span() is not None
        return 1

    rec = Recorder(provider)
    assert outer(2) == 3
    (o_start,), (o_end,) = start_end(rec, "outer")
    (i_start,), (i_end,) = start_end(rec, "inner")
    assert o_start["parent_span_id"] == 0 and o_start["span_id"] != 0
    assert (o_start["trace_id_high"], o_start["trace_id_low"]) != (0, 0)
    assert i_start["parent_span_id"] == o_start["span_id"]
    assert i_start["trace_id_low"] == o_start["trace_id_low"]
    assert i_start["trace_id_high"] == o_start["trace_id_high"]
    assert o_start["flags"] == i_start["flags"] == 1  # W3C sampled, no conversion failure
    assert o_start["n"] == 2 and i_start["text.value"] == "x"
    assert o_end == {"probe": "outer__end", "span_id": o_start["span_id"], "status": 0,
                     "error_type": "", "error_message": "", "flags": 0, "result": 3}
    assert [h["probe"] for h in rec.hits] == ["outer__start", "inner__start", "inner__end", "outer__end"]
    assert context.current_span() is None


def test_recursion(provider):
    @provider.span("fact", attributes=("n",))
    def fact(n: int):
        return 1 if n <= 1 else n * fact(n - 1)

    rec = Recorder(provider)
    assert fact(5) == 120
    starts = rec.of("fact__start")
    assert [s["n"] for s in starts] == [5, 4, 3, 2, 1]
    for parent, child in zip(starts, starts[1:]):
        assert child["parent_span_id"] == parent["span_id"]
    assert [e["span_id"] for e in rec.of("fact__end")] == [s["span_id"] for s in reversed(starts)]


def test_exception_propagates_unchanged_and_is_recorded(provider):
    error = MyError("x" * 300)

    @provider.span("boom", record_return=int)
    def boom():
        raise error

    rec = Recorder(provider)
    with pytest.raises(MyError) as info:
        boom()
    assert info.value is error
    (end,) = rec.of("boom__end")
    assert end["status"] == 1
    assert end["error_type"] == f"{__name__}.MyError"
    assert end["error_message"] == "x" * 256
    # no return value: the end attribute is marked as not given (its bit), never sent as a real 0
    assert end["result"] == 0 and end["flags"] == 1 << 8
    assert context.current_span() is None


def test_builtin_exception_type_name_and_odd_messages(provider):
    @provider.span("bad")
    def bad(msg):
        raise ValueError(msg)

    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no")

    @provider.span("worse")
    def worse():
        raise Unprintable()

    rec = Recorder(provider)
    with pytest.raises(ValueError):
        bad("nul\0and surrogate \udc80")
    with pytest.raises(Unprintable):
        worse()
    (end,) = rec.of("bad__end")
    assert end["error_type"] == "ValueError"
    assert end["error_message"] == "nul\\0and surrogate \\udc80"
    (end,) = rec.of("worse__end")
    assert end["status"] == 1 and "failed" in end["error_message"]


def test_cancelled_task_ends_span_cancelled(provider):
    started = None

    @provider.span("slow")
    async def slow():
        started.set()
        await asyncio.sleep(10)

    async def main():
        nonlocal started
        started = asyncio.Event()
        task = asyncio.ensure_future(slow())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    rec = Recorder(provider)
    asyncio.run(main())
    (end,) = rec.of("slow__end")
    assert end["status"] == 2 and end["error_type"] == "asyncio.CancelledError"


def test_conversion_failures_are_flagged_not_raised(provider):
    called = []

    def callback():
        called.append(1)
        return "never"

    def broken(*args):
        raise RuntimeError("computed attribute fails")

    @provider.span("conv", attributes={"s": str, "n": "u8", "cb": str, "x": float},
                   computed={"c": ("u32", broken), "ok": ("u32", lambda s, n, cb, x: 7)})
    def conv(s, n, cb, x):
        return "fine"

    rec = Recorder(provider)
    assert conv("nul\0", 300, callback, 1) == "fine"
    (start,) = rec.of("conv__start")
    # attributes: s=0 n=1 cb=2 x=3 c=4 ok=5 -> failures: s (NUL), n (range), cb (not a str), c (raised)
    assert start["flags"] == 1 | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 12)
    assert (start["s"], start["n"], start["cb"], start["c"], start["ok"]) == ("", 0, "", 0, 7)
    assert start["x"] == 1.0  # an int for an f64 converts
    assert called == [], "a captured parameter is never called, even if callable"


def test_plain_subclasses_convert_without_user_code(provider):
    import enum

    class Color(str, enum.Enum):
        RED = "red"

        def __str__(self):
            raise AssertionError("user __str__ must not run")

    class Level(enum.IntEnum):
        HIGH = 3

    @provider.span("sub", attributes={"c": str, "l": "u8"})
    def sub(c, l):
        return c

    rec = Recorder(provider)
    sub(Color.RED, Level.HIGH)
    (start,) = rec.of("sub__start")
    assert (start["c"], start["l"], start["flags"]) == ("red", 3, 1)


def test_tracer_attaching_mid_call_does_not_fire_half_a_span(provider):
    rec = None

    @provider.span("mid")
    def mid():
        rec.set_enabled(True)

    rec = Recorder(provider)
    rec.set_enabled(False)
    mid()
    assert rec.hits == []


def test_computed_attribute_with_the_wrong_signature_is_refused_at_decoration():
    from spanprobe import DeclarationError, Provider

    p = Provider("computedsig")
    with pytest.raises(DeclarationError, match="computed attribute 'n'.*called with the function's arguments"):
        @p.span(computed={"n": (int, lambda records: len(records))})
        def store(batch, records):
            pass

    @p.span(computed={"n": (int, lambda batch, records: len(records))})
    def store_ok(batch, records):
        pass
