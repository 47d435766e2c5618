"""Spans and events read by real BPF: bcc attached by pid reads the ids the SDK fires.

The capture tool (tests/support/usdt_capture.py) knows nothing of spanprobe:
it reads the probes' arguments as declared in docs/abi.md "Span protocol".
"""

import os
import sys
import urllib.request

import pytest

from tests.support import (ROOT, Lines, as_dicts, by_probe, capture, go, hits, python_child, ready_info, run_traced,
                           trace)

pytestmark = pytest.mark.bpf

START = ["u64", "u64", "u64", "u64", "u32"]
END = ["u64", "u8", "str", "str", "u32"]
EVENT = ["u64", "u64", "u64", "u32"]
START_NAMES = ["span_id", "parent_span_id", "trace_id_high", "trace_id_low", "flags"]
END_NAMES = ["span_id", "status", "error_type", "error_message", "flags"]
EVENT_NAMES = ["span_id", "trace_id_high", "trace_id_low", "flags"]


NESTING = '''
import asyncio, threading
import spanprobe
p = spanprobe.Provider("spbpf")

@p.span("outer", attributes={"n": "u32"})
def outer(n):
    return inner(n) + inner(n)

@p.span("inner", attributes={"n": "u32"}, record_return="u32")
def inner(n):
    return n

@p.span("atask", attributes={"i": "u32"})
async def atask(i):
    await asyncio.sleep(0.1)
    return await achild(i)

@p.span("achild", attributes={"i": "u32"})
async def achild(i):
    await asyncio.sleep(0.01)
    return i

async def staggered(i):
    await asyncio.sleep(0.002 * i)  # the capture drains while we go on
    return await atask(i)

async def main():
    return await asyncio.gather(*(staggered(i) for i in range(100)))

p.load()
ready()
wait_go()
outer(1)
threads = [threading.Thread(target=outer, args=(n,)) for n in range(2, 6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert asyncio.run(main()) == list(range(100))
print("DONE", flush=True)
wait_stdin()
'''


def test_parent_child_links_sync_threads_and_100_tasks():
    probes = {"outer__start": START + ["u32"], "outer__end": END,
              "inner__start": START + ["u32"], "inner__end": END + ["u32"],
              "atask__start": START + ["u32"], "atask__end": END,
              "achild__start": START + ["u32"], "achild__end": END}
    layouts = {name: (START_NAMES if name.endswith("start") else END_NAMES)
               + (["n"] if name.startswith(("outer__s", "inner__s")) else [])
               + (["i"] if name.startswith(("atask__s", "achild__s")) else [])
               + (["result"] if name == "inner__end" else []) for name in probes}
    records = run_traced(NESTING, probes, layouts, count=2 * (5 + 10 + 100 + 100))

    outers = {r["span_id"]: r for r in by_probe(records, "outer__start")}
    assert sorted(r["n"] for r in outers.values()) == [1, 2, 3, 4, 5]
    assert all(r["parent_span_id"] == 0 and r["flags"] == 1 for r in outers.values())
    assert len({trace(r) for r in outers.values()}) == 5, "one trace per root call, threads apart"
    inners = by_probe(records, "inner__start")
    assert len(inners) == 10
    for r in inners:
        parent = outers[r["parent_span_id"]]
        assert trace(r) == trace(parent) and r["n"] == parent["n"]
    assert sorted(r["result"] for r in by_probe(records, "inner__end")) == sorted([1, 2, 3, 4, 5] * 2)

    tasks = {r["i"]: r for r in by_probe(records, "atask__start")}
    children = by_probe(records, "achild__start")
    assert sorted(tasks) == list(range(100)) and len(children) == 100
    for child in children:
        parent = tasks[child["i"]]
        assert child["parent_span_id"] == parent["span_id"] and trace(child) == trace(parent)
    assert len({trace(t) for t in tasks.values()}) == 100

    starts = [r for r in records if r["probe"].endswith("__start")]
    ends = [r for r in records if r["probe"].endswith("__end")]
    assert len({r["span_id"] for r in starts}) == len(starts) == 215, "span ids are unique"
    assert sorted(r["span_id"] for r in ends) == sorted(r["span_id"] for r in starts)
    assert all(r["status"] == 0 and r["error_type"] == "" for r in ends)


OUTCOMES = '''
import asyncio
import spanprobe
from opentelemetry.sdk.trace import TracerProvider
p = spanprobe.Provider("spbpf2")

class PaymentError(Exception):
    pass

@p.span("pay", attributes={"amount": "u32"})
def pay(amount):
    if amount > 100:
        raise PaymentError("limit exceeded: %d" % amount)
    return amount

@p.span("wait")
async def wait(started):
    started.set()
    await asyncio.sleep(30)

async def cancel_one():
    started = asyncio.Event()
    task = asyncio.ensure_future(wait(started))
    await started.wait()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass

tick = p.event("tick", {"tick.n": "u32"})
tracer = TracerProvider().get_tracer("app")
p.load()
ready()
wait_go()
with tracer.start_as_current_span("request") as app:
    sc = app.get_span_context()
    print("OTEL %d %d" % (sc.trace_id, sc.span_id), flush=True)
    pay(5)
    tick.fire(7)
try:
    pay(500)
except PaymentError:
    pass
asyncio.run(cancel_one())
print("DONE", flush=True)
wait_stdin()
'''


def test_otel_parent_exception_and_cancellation():
    probes = {"pay__start": START + ["u32"], "pay__end": END, "wait__start": START, "wait__end": END,
              "tick": EVENT + ["u32"]}
    layouts = {"pay__start": START_NAMES + ["amount"], "pay__end": END_NAMES, "wait__start": START_NAMES,
               "wait__end": END_NAMES, "tick": EVENT_NAMES + ["tick.n"]}
    proc = python_child(OUTCOMES)
    cap = None
    try:
        info = ready_info(proc)
        cap = capture(info["pid"], probes)
        go(proc)
        _, trace_id, app_span_id = proc.expect("OTEL ").split()
        records = as_dicts(hits(cap, 7, timeout=60), layouts)
        proc.expect("DONE")
    finally:
        if cap is not None:
            cap.stop()
        proc.stop()
    trace_id, app_span_id = int(trace_id), int(app_span_id)

    joined, alone = by_probe(records, "pay__start")
    assert (joined["trace_id_high"] << 64) | joined["trace_id_low"] == trace_id
    assert joined["parent_span_id"] == app_span_id and joined["amount"] == 5
    assert alone["parent_span_id"] == 0 and alone["amount"] == 500
    assert (alone["trace_id_high"] << 64) | alone["trace_id_low"] != trace_id

    (tick,) = by_probe(records, "tick")
    assert tick["span_id"] == app_span_id and (tick["trace_id_high"] << 64) | tick["trace_id_low"] == trace_id
    assert tick["tick.n"] == 7

    ok, failed = by_probe(records, "pay__end")
    assert (ok["span_id"], ok["status"]) == (joined["span_id"], 0)
    assert failed["span_id"] == alone["span_id"] and failed["status"] == 1
    assert failed["error_type"] == "__main__.PaymentError"
    assert failed["error_message"] == "limit exceeded: 500"

    (wait_start,), (wait_end,) = by_probe(records, "wait__start"), by_probe(records, "wait__end")
    assert wait_end["span_id"] == wait_start["span_id"]
    assert (wait_end["status"], wait_end["error_type"]) == (2, "asyncio.CancelledError")


def test_instrument_command_on_unmodified_http_server(tmp_path):
    (tmp_path / "hello.txt").write_text("hello, probes\n")
    port = 20000 + os.getpid() % 20000
    config = os.path.join(ROOT, "demo_apps", "http_server_probes.toml")
    server = Lines([sys.executable, "-u", "-m", "spanprobe.instrument", "--config", config,
                    "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)])
    cap = None
    try:
        server.expect("Serving HTTP", timeout=60)
        probes = {"file_transfer": EVENT + ["str", "str", "u32"], "request__start": START + ["str", "u16"],
                  "request__end": END, "do_GET__start": START + ["str"], "do_GET__end": END,
                  "response": EVENT + ["u16"]}
        layouts = {"file_transfer": EVENT_NAMES + ["client", "path", "size"],
                   "request__start": START_NAMES + ["client", "port"], "request__end": END_NAMES,
                   "do_GET__start": START_NAMES + ["url.path"], "do_GET__end": END_NAMES,
                   "response": EVENT_NAMES + ["status_code"]}
        cap = capture(server.proc.pid, probes)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/hello.txt", timeout=30).read()
        assert body == b"hello, probes\n"
        records = as_dicts(hits(cap, 6, timeout=60), layouts)
    finally:
        if cap is not None:
            cap.stop()
        server.stop()

    (transfer,) = by_probe(records, "file_transfer")
    assert transfer["client"] == "127.0.0.1"
    assert transfer["path"] == str(tmp_path / "hello.txt")
    assert transfer["size"] == len(b"hello, probes\n")
    (request,), (get,) = by_probe(records, "request__start"), by_probe(records, "do_GET__start")
    assert request["client"] == "127.0.0.1" and request["parent_span_id"] == 0
    assert get["parent_span_id"] == request["span_id"] and get["url.path"] == "/hello.txt"
    assert transfer["span_id"] == get["span_id"] and trace(transfer) == trace(request)
    (response,) = by_probe(records, "response")
    assert response["status_code"] == 200 and response["span_id"] == get["span_id"]
    assert {r["status"] for r in records if r["probe"].endswith("__end")} == {0}
