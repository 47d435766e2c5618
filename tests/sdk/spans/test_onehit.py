"""The one-hit span probe (``<base>__span``) without BPF: its payload carries exactly what the start and
end probes carry, for every way a span is made, and it fires only for spans that began traced by it."""

import asyncio
import os
import sys
import time

import pytest

import spanprobe
from spanprobe.instrument import Instrumentation
from spanprobe.spans import context
from spanprobe.testing import Recorder


def _pairs(rec, base):
    """(start hit, end hit, one-hit payload) of each span of ``base``, matched by span id."""
    starts = {h["span_id"]: h for h in rec.of(f"{base}__start")}
    ends = {h["span_id"]: h for h in rec.of(f"{base}__end")}
    ones = [h["span"] for h in rec.of(f"{base}__span")]
    assert len(ones) == len(starts) == len(ends)
    return [(starts[o["start"]["span_id"]], ends[o["end"]["span_id"]], o) for o in ones]


def _same(rec, base):
    """Every span of ``base``: the payload's start and end arguments equal the start and end hits'."""
    pairs = _pairs(rec, base)
    for start, end, one in pairs:
        assert {"probe": start["probe"], **one["start"]} == start
        assert {"probe": end["probe"], **one["end"]} == end
    return pairs


def test_decorated_spans_carry_both_probes_in_one_hit(provider):
    @provider.span("handle", attributes={"method": str, "status": "u16", "delta": "i32", "ratio": float,
                                         "ok": bool, "blob": bytes}, record_return="i64")
    def handle(method, status, delta, ratio, ok, blob):
        if method == "RAISE":
            raise ValueError("bad \0 method")
        return -delta

    rec = Recorder(provider, one_hit=True)
    before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    handle("GET", 200, -7, 0.25, True, b"\x00\x01")
    handle(None, 1 << 20, 1, 1, "x", "not bytes")     # every start attribute fails to convert
    with pytest.raises(ValueError):
        handle("RAISE", 500, 0, -0.0, False, b"")
    after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    pairs = _same(rec, "handle")
    ok, failed, raised = (one for _, _, one in pairs)
    assert before <= ok["start_time"] <= failed["start_time"] <= raised["start_time"] <= after
    assert ok["start"]["method"] == "GET" and ok["start"]["delta"] == -7 and ok["end"]["result"] == 7
    assert ok["start"]["blob"] == b"\x00\x01" and ok["start"]["ratio"] == 0.25
    assert failed["start"]["flags"] == 0x01 | (0b110011 << 8)   # an int converts to i32 and f64
    assert raised["end"]["status"] == 1 and raised["end"]["error_type"] == "ValueError"
    assert raised["end"]["error_message"] == "bad \\0 method" and raised["end"]["flags"] == 1 << 8


def test_async_nested_and_set_status_spans(provider):
    @provider.span("inner")
    async def inner():
        spanprobe.set_status("error", "degraded")
        await asyncio.sleep(0)

    @provider.span("outer", attributes={"n": int})
    async def outer(n):
        await inner()
        await asyncio.sleep(0)
        return n

    @provider.span("cancelled")
    async def cancelled():
        await asyncio.sleep(10)

    async def main():
        await outer(3)
        task = asyncio.ensure_future(cancelled())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    rec = Recorder(provider, one_hit=True)
    asyncio.run(main())
    (_, _, o), = _same(rec, "outer")
    (_, _, i), = _same(rec, "inner")
    (_, _, c), = _same(rec, "cancelled")
    assert i["start"]["parent_span_id"] == o["start"]["span_id"]
    assert i["start"]["trace_id_low"] == o["start"]["trace_id_low"]
    assert i["end"]["status"] == 3 and i["end"]["error_message"] == "degraded"
    assert c["end"]["status"] == 2 and c["end"]["error_type"] == "asyncio.CancelledError"


def test_blocks_and_instrumented_functions(provider, tmp_path, monkeypatch):
    block = provider.span_block("db.query", attributes={"db.statement": str}, end_attributes={"rows": "u32"})
    name = f"sp_onehit_{os.urandom(4).hex()}"
    (tmp_path / f"{name}.py").write_text("def work(n):\n    return n * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    inst = Instrumentation(spanprobe.Provider("onehit_hooks"))
    inst.span(f"{name}:work", attributes={"n": ("i32", "n")}, end_attributes={"result": ("i32", "result")})
    rec = Recorder(provider, one_hit=True)
    hooks_rec = Recorder(inst.provider, one_hit=True)
    with block("select 1") as s:
        s.set_end(rows=4)
    with pytest.raises(KeyError):
        with block(lambda: "select 2"):
            raise KeyError("k")
    inst.apply()
    try:
        assert __import__(name).work(21) == 42
    finally:
        sys.modules.pop(name, None)
    given, missing = (one for _, _, one in _same(rec, "db_query"))
    assert given["end"]["rows"] == 4 and given["start"]["db.statement"] == "select 1"
    assert missing["start"]["db.statement"] == "select 2" and missing["end"]["flags"] == 1 << 8
    (_, _, work), = _same(hooks_rec, "work")
    assert work["start"]["n"] == 21 and work["end"]["result"] == 42


def test_only_the_probes_listened_to_fire(provider):
    @provider.span("handle", attributes={"method": str})
    def handle(method):
        return method

    rec = Recorder(provider, one_hit=True)
    rec.set_enabled(False, one_hit=True)
    provider.probes["handle__span"].enabled.value = 1   # a tracer on the span probe only
    handle("GET")
    assert [h["probe"] for h in rec.hits] == ["handle__span"]
    rec.clear()
    provider.probes["handle__span"].enabled.value = 0
    provider.probes["handle__end"].enabled.value = 1    # a tracer on the pair only (an older one)
    handle("GET")
    assert [h["probe"] for h in rec.hits] == ["handle__start", "handle__end"]


def test_a_tracer_attaching_or_leaving_mid_span_gets_nothing_of_it(provider):
    one = None

    @provider.span("handle")
    def handle(attach):
        one.enabled.value = attach
        return context.current_span()

    rec = Recorder(provider, one_hit=True)
    rec.set_enabled(False, one_hit=True)
    one = provider.probes["handle__span"]
    assert handle(1) is None          # untraced at begin: no ids, no hit, though listened to at the end
    assert handle(0) is not None      # traced at begin, the tracer left: no hit
    assert rec.hits == []
    one.enabled.value = 1
    assert handle(1) is not None
    assert len(rec.of("handle__span")) == 1


def test_children_and_events_of_a_one_hit_span_on_the_pair(provider):
    """A span traced by its span probe alone makes no id arguments; a child traced by its start/end pair,
    an event and a root's pair child make them from the ints: the same ids everywhere."""
    tick = provider.event("tick", n=int)

    @provider.span("child")
    def child():
        tick.fire(1)

    @provider.span("parent")
    def parent():
        child()

    rec = Recorder(provider, one_hit=True)
    rec.set_enabled(False, one_hit=True)
    for name in ("parent__span", "child__start", "child__end", "tick"):
        provider.probes[name].enabled.value = 1
    parent()
    (p,) = [h["span"]["start"] for h in rec.of("parent__span")]
    (c,) = rec.of("child__start")
    (t,) = rec.of("tick")
    assert c["parent_span_id"] == p["span_id"] and t["span_id"] == c["span_id"]
    assert (c["trace_id_high"], c["trace_id_low"]) == (p["trace_id_high"], p["trace_id_low"])
    assert (t["trace_id_high"], t["trace_id_low"]) == (p["trace_id_high"], p["trace_id_low"])
    rec.clear()
    provider.probes["child__start"].enabled.value = provider.probes["child__end"].enabled.value = 0
    tick.fire(2)  # outside any span
    parent()      # the child untraced: the event hangs from the parent, traced by its span probe alone
    outside, inside = rec.of("tick")
    assert outside["span_id"] == outside["trace_id_low"] == 0
    (p,) = [h["span"]["start"] for h in rec.of("parent__span")]
    assert (inside["span_id"], inside["trace_id_high"], inside["trace_id_low"]) == (
        p["span_id"], p["trace_id_high"], p["trace_id_low"])


def test_a_blocks_lazy_values_are_called_once_when_given(provider):
    """Start values when the span begins, end values when it ends: once each, whichever probes fire."""
    block = provider.span_block("lazy", attributes={"a": str}, end_attributes={"r": "i32"})
    calls = []

    def start_value():
        calls.append("start")
        return "begun"

    def end_value():
        calls.append("end")
        return -1

    rec = Recorder(provider, one_hit=True)   # the pair and the span probe both listened to
    with block(start_value) as s:
        assert calls == ["start"]
        s.set_end(end_value)
        assert calls == ["start"]
    assert calls == ["start", "end"]
    (_, _, one), = _same(rec, "lazy")
    assert one["start"]["a"] == "begun" and one["end"]["r"] == -1


@pytest.mark.parametrize("one_hit", [False, True], ids=["pair", "one-hit"])
def test_computed_attributes_run_inside_the_new_span(provider, one_hit):
    """A computed attribute is evaluated once the span is current, on both paths: the current span it
    reads is the new span, in spanprobe's context and OpenTelemetry's, and set_status sets the new
    span's status, not its parent's."""
    from opentelemetry import trace

    seen = []

    def look(x):
        seen.append((context.current_span(), trace.get_current_span().get_span_context().span_id))
        spanprobe.set_status("error", "from computed")
        return x

    @provider.span("inner", computed={"x": (int, look)})
    def inner(x):
        return context.current_span()

    @provider.span("outer")
    def outer():
        return inner(5)

    lazy = provider.span_block("lazy", attributes={"y": int})

    @provider.span("block")
    def block():
        with lazy(lambda: look(6)):
            return context.current_span()

    rec = Recorder(provider, one_hit=True)
    rec.set_enabled(False, one_hit=True)
    for name in ("inner", "outer", "lazy", "block"):
        if one_hit:
            provider.probes[f"{name}__span"].enabled.value = 1
        else:
            provider.probes[f"{name}__start"].enabled.value = provider.probes[f"{name}__end"].enabled.value = 1
    for fn in (outer, block):
        rec.clear()
        seen.clear()
        current = fn()
        assert seen == [(current, current[2])]
        if one_hit:
            (span,) = [h["span"] for h in rec.hits if h["span"]["start"]["span_id"] == current[2]]
            end, parents = span["end"], [h["span"] for h in rec.hits if h["span"]["start"]["span_id"] != current[2]]
        else:
            (end,) = [h for h in rec.hits if h["probe"].endswith("__end") and h["span_id"] == current[2]]
            parents = [h for h in rec.hits if h["probe"].endswith("__end") and h["span_id"] != current[2]]
        assert end["status"] == 3 and end["error_message"] == "from computed"
        assert [p.get("end", p)["status"] for p in parents] == [0]


@pytest.mark.parametrize("one_hit", [False, True], ids=["pair", "one-hit"])
def test_a_bytes_value_the_call_changes_is_sent_as_it_was_at_entry(provider, one_hit):
    """The span probe packs start values at the end: a bytearray or memoryview given to a bytes attribute
    is copied at begin, so both paths send the value the call began with."""
    @provider.span("fill", attributes={"buf": bytes, "view": bytes})
    def fill(buf, view):
        buf[:] = b"after"
        view[:] = b"AFTER"

    block = provider.span_block("blk", attributes={"buf": bytes})
    rec = Recorder(provider, one_hit=True)
    rec.set_enabled(False, one_hit=True)
    for name in ("fill", "blk"):
        if one_hit:
            provider.probes[f"{name}__span"].enabled.value = 1
        else:
            provider.probes[f"{name}__start"].enabled.value = 1
    fill(bytearray(b"entry"), memoryview(bytearray(b"ENTRY")))
    buf = bytearray(b"entry")
    with block(buf):
        buf[:] = b"after"
    got = [h["span"]["start"] if one_hit else h for h in rec.hits if one_hit or h["probe"].endswith("__start")]
    assert [(h["buf"], h.get("view")) for h in got] == [(b"entry", b"ENTRY"), (b"entry", None)]
    assert all(h["flags"] & ~0xff == 0 for h in got)


def test_a_span_the_span_probe_cannot_fire_is_counted_and_logged_once(provider, caplog):
    """The span probe's slow path never raises into the call: a span it drops is counted in the probe's
    conversion_failures (as the otel_span probe counts), logged once."""
    from spanprobe.probes.semaphore import Semaphore

    @provider.span("handle", attributes={"n": int})
    def handle(n):
        return n

    def broken_site(payload):
        raise RuntimeError("site")

    one = provider.probes["handle__span"]
    one.attach_site(Semaphore(1), broken_site)
    with caplog.at_level("WARNING", logger="spanprobe"):
        assert [handle(1), handle("not an int"), handle(3)] == [1, "not an int", 3]
    assert one.conversion_failures == 3
    assert [r.getMessage() for r in caplog.records if "handle__span" in r.getMessage()] == [
        f"spanprobe: could not fire span probe {one.qualname} (span dropped; later ones counted in "
        "its conversion_failures, not logged)"]


_IN_TIME_NAMESPACE = r"""
import json, time
import spanprobe
from spanprobe.testing import Recorder

provider = spanprobe.Provider("timens")

@provider.span("work")
def work():
    return None

rec = Recorder(provider, one_hit=True)
work()
print(json.dumps({"start": rec.of("work__span")[0]["span"]["start_time"],
                  "own_clock": time.clock_gettime_ns(time.CLOCK_BOOTTIME)}))
"""


def test_the_start_time_is_on_the_kernels_clock_inside_a_time_namespace():
    """In a time namespace whose CLOCK_BOOTTIME runs 1000 s ahead of the kernel's, the span probe's start
    time is still the kernel's clock (what bpf_ktime_get_boot_ns reads at the hit)."""
    import json
    import subprocess

    before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    out = subprocess.run(["unshare", "--time", "--boottime", "1000", sys.executable, "-c", _IN_TIME_NAMESPACE],
                         capture_output=True, text=True, check=True)
    after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    got = json.loads(out.stdout)
    assert got["own_clock"] - after > 999 * 10**9     # the namespace's clock is ahead, as set
    assert before <= got["start"] <= after
def test_strings_travel_inline_cut_at_the_payload_bound(provider):
    from spanprobe.abi.protocol import PAYLOAD_STR

    @provider.span("text", attributes={"s": str})
    def text(s):
        raise ValueError(s)

    rec = Recorder(provider, one_hit=True)
    lengths = (0, PAYLOAD_STR - 1, PAYLOAD_STR, PAYLOAD_STR + 1, 3 * PAYLOAD_STR)
    for n in lengths:
        with pytest.raises(ValueError):
            text("x" * n)
    for (start, end, one), n in zip(_pairs(rec, "text"), lengths):
        assert start["s"] == "x" * n and one["start"]["s"] == "x" * min(n, PAYLOAD_STR)
        assert {"probe": end["probe"], **one["end"]} == end and end["error_message"] == "x" * min(n, 256)


def test_the_inlined_fast_path_packs_what_the_slow_path_packs(provider):
    """The span probe's statements that generated wrappers inline (onehit.SpanProbeCode.source): plain
    values take the fast path (its struct's pad bytes standing for the fields known zero there), and its
    payload is byte for byte what the careful slow path packs for the same values."""
    from spanprobe.probes.firing import indent
    from spanprobe.spans.onehit import SpanProbeCode

    @provider.span("mixed", attributes={"method": str, "status": "u16", "delta": "i32", "ratio": float,
                                        "ok": bool, "route": str}, record_return="i64")
    def mixed(method, status, delta, ratio, ok, route):
        return delta

    span = mixed.__spanprobe_span__
    code = SpanProbeCode(span.one, span.start, span.end)
    params = [f"v{i}" for i in range(len(code.attrs))]
    sent = []
    site, span.one.site_cell.cell_contents = span.one.site_cell.cell_contents, sent.append
    try:
        values = ("GET", 200, -7, 0.25, True, "/items/{id}", -1 << 40)
        ids = (1 << 63 | 5, 7, (1 << 64) - 1, 9, 1)
        description, error_type = b"why", b"ValueError"
        for et, em in ((None, None), (None, description), (error_type, description)):
            def never(*args):
                raise AssertionError(f"the slow path was taken for {args}")
            namespace = dict(code.names, _sp_o_slow=never)
            source = (f"def fire(t0, x, px, hx, lx, fl, st, et, em, {', '.join(params)}):\n"
                      + indent(code.source("t0", ("x", "px", "hx", "lx", "fl"), "st", "None" if et is None else "et",
                                           "em", params), 4))
            exec(source, namespace)
            namespace["fire"](123456789, *ids, 3, et, em, *values)
            code.names["_sp_o_slow"](123456789, ids, 3, et, em, values)
            fast, slow = sent[-2:]
            assert len(fast) == 4 + code.size and fast == slow
    finally:
        span.one.site_cell.cell_contents = site


def test_decorated_wrappers_take_the_fast_path_for_plain_values(provider):
    """The wrapper a decorator generates inlines the fast path: plain values never reach the slow path
    (which would still fire the same payload, only slower, so nothing else would notice); a value that
    needs converting, or cannot be, does."""
    @provider.span("plain", attributes={"method": str, "status": "u16", "ratio": float}, record_return=str)
    def plain_call(method, status, ratio):
        return method.lower()

    rec = Recorder(provider, one_hit=True)
    names = plain_call.__globals__   # the generated wrapper's namespace (span.names, copied)
    slow_calls = []
    slow = names["_sp_o_slow"]
    names["_sp_o_slow"] = lambda *args: (slow_calls.append(args), slow(*args))
    plain_call("GET", 200, 0.5)
    assert slow_calls == []
    plain_call("GET", 200, 1)              # an int for an f64: converted by the slow path, not a failure
    plain_call("GET", 1 << 20, 0.5)        # out of the u16's range: the slow path, which flags it
    assert len(slow_calls) == 2
    ones = [o for _, _, o in _pairs(rec, "plain")]
    assert [o["end"]["result"] for o in ones] == ["get"] * 3
    assert [o["start"]["ratio"] for o in ones] == [0.5, 1.0, 0.5]
    assert [o["start"]["flags"] & ~0xFF for o in ones] == [0, 0, 1 << 9]
