"""Ids and the current span: contexts per thread and task, fresh ids after fork, and joining
an active OpenTelemetry span (spanprobe.spans.context), without BPF."""

import asyncio
import os
import subprocess
import sys
import threading

import pytest

from spanprobe.spans import context
from spanprobe.testing import Recorder


# --- untraced: nothing happens -------------------------------------------------------


def test_untraced_call_touches_no_context_and_makes_no_ids(provider):
    seen = []

    @provider.span(attributes=("x",))
    def f(x: int):
        seen.append(context.current_span())
        return x

    rec = Recorder(provider)
    rec.set_enabled(False)
    state = context.id_random.getstate()
    assert f(1) == 1 and seen == [None] and rec.hits == []
    assert context.id_random.getstate() == state, "an id was generated"


def test_threads_have_separate_traces(provider):
    @provider.span("work", attributes=("i",))
    def work(i: int):
        return leaf(i)

    @provider.span("leaf")
    def leaf(i):
        return context.current_span()

    rec = Recorder(provider)
    results = [None] * 8

    def run(i):
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts = {s["span_id"]: s for s in rec.of("work__start")}
    assert len(starts) == 8
    traces = {(s["trace_id_high"], s["trace_id_low"]) for s in starts.values()}
    assert len(traces) == 8, "each thread's root span starts its own trace"
    for leaf_start in rec.of("leaf__start"):
        parent = starts[leaf_start["parent_span_id"]]
        assert leaf_start["trace_id_low"] == parent["trace_id_low"]


def test_concurrent_tasks_nest_correctly(provider):
    @provider.span("task", attributes=("i",))
    async def task(i: int):
        await asyncio.sleep(0.001 * (i % 3))
        return await child(i)

    @provider.span("child", attributes=("i",))
    async def child(i: int):
        await asyncio.sleep(0)
        return i

    async def main():
        return await asyncio.gather(*(task(i) for i in range(100)))

    rec = Recorder(provider)
    assert asyncio.run(main()) == list(range(100))
    tasks = {s["i"]: s for s in rec.of("task__start")}
    children = rec.of("child__start")
    assert len(tasks) == 100 and len(children) == 100
    for c in children:
        assert c["parent_span_id"] == tasks[c["i"]]["span_id"]
        assert c["trace_id_low"] == tasks[c["i"]]["trace_id_low"]
    ends = {e["span_id"] for e in rec.of("task__end") + rec.of("child__end")}
    assert ends == {s["span_id"] for s in rec.of("task__start") + children}


def test_child_after_fork_makes_different_ids():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, context.random_bits(64).to_bytes(8, "little"))
        os._exit(0)
    os.waitpid(pid, 0)
    child = int.from_bytes(os.read(r, 8), "little")
    assert child != context.random_bits(64)


# --- OpenTelemetry -------------------------------------------------------------------


def test_root_span_joins_active_opentelemetry_span(provider):
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry import trace

    tracer = sdk_trace.TracerProvider().get_tracer("test")

    @provider.span("joined")
    def joined():
        return child()

    @provider.span("child")
    def child():
        return 1

    rec = Recorder(provider)
    with tracer.start_as_current_span("app") as app_span:
        joined()
        reader_view = context.otel_parent()
        api_view = trace.get_current_span().get_span_context()
    sc = app_span.get_span_context()
    (start,) = rec.of("joined__start")
    assert (start["trace_id_high"] << 64) | start["trace_id_low"] == sc.trace_id
    assert start["parent_span_id"] == sc.span_id
    assert start["flags"] == int(sc.trace_flags)
    (child_start,) = rec.of("child__start")
    assert child_start["parent_span_id"] == start["span_id"], "spanprobe's own parent wins"
    assert child_start["trace_id_low"] == start["trace_id_low"]
    # The fast reader sees exactly what the public API sees.
    ids = [api_view.trace_id >> 64, api_view.trace_id & (2**64 - 1), api_view.span_id]
    # ids as ints; no probe arguments (made where a start/end pair or an event needs them)
    assert list(reader_view[4:7]) == ids and reader_view[:3] == (None, None, None)
    assert list(reader_view[3:]) == [int(api_view.trace_flags)] + ids
    rec.clear()
    joined()
    (start,) = rec.of("joined__start")
    assert start["parent_span_id"] == 0 and start["trace_id_low"] != sc.trace_id & (2**64 - 1)


def test_opentelemetry_context_without_a_valid_span_is_no_parent():
    pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry import baggage, context as otel_context

    token = otel_context.attach(baggage.set_baggage("tenant", "a"))  # a Context with a value, no span
    try:
        assert context.otel_parent() is None
        assert context.parent_context() is None
    finally:
        otel_context.detach(token)
    assert context.otel_parent() is None


_BIND_RACE = r"""
import sys, threading
import opentelemetry.trace as trace
from spanprobe.spans import context
from spanprobe.testing import Recorder
import spanprobe

sys.setswitchinterval(1e-6)
provider = spanprobe.Provider("race")

@provider.span("work")
def work():
    return type(trace.get_current_span())

Recorder(provider)
barrier = threading.Barrier(8)
seen = []

def run():
    barrier.wait()
    seen.append(work())

threads = [threading.Thread(target=run) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(seen), len(set(seen)))
"""


def test_the_opentelemetry_bridge_is_bound_once_by_racing_threads():
    """Eight threads making their first traced spans at once (a fresh process: the bridge binds on first
    use) all get the one light span type, so every span reads back as a parent by the type check."""
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", _BIND_RACE], capture_output=True, text=True, check=True)
        assert out.stdout.split() == ["8", "1"], out.stderr
