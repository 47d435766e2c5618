"""Decorator and block spans on the one-hit span probe: the tracer attaches it alone, the spans it exports
are the ones the start/end pair gives, field by field, and a tracer arriving mid-span exports no half span."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.tracer_helpers import (ONE_HIT_SITES, SpanPath, Tracee, Tracer, jsonl_tracer, read_jsonl,
                                         run_spanprobe, stats_of, wait_attached, wait_until)

pytestmark = pytest.mark.bpf

#: Spans of every kind the SDK makes, with fixed ids (the id generator seeded), so that two runs make the
#: same spans; at the end, the semaphores of its probes: which ones the tracer attached.
APP = r'''
import asyncio, json, sys
import spanprobe
from spanprobe.spans import context

p = spanprobe.Provider("both")
db = p.span_block("db.query", kind="client", attributes={"db.query.text": str, "db.rows.max": "u16"},
                  end_attributes={"db.rows": "u32", "db.blob": bytes})
note = p.event("order.note", text=str)

@p.span(attributes=True)
async def reserve(item: int, ratio: float, urgent: bool):
    await asyncio.sleep(0)
    return item

@p.span("checkout", kind="server", attributes={"user": ("user.id", "i64"), "tag": str},
        record_return=("order.total", "f64"))
async def checkout(user, tag):
    await reserve(user * 10, user / 3, user % 2 == 0)
    note.fire("reserved %d" % user)
    with db("SELECT %d" % user, 500) as q:
        q.set_end(user, b"\x00\xff" * user)
    if user == 3:
        spanprobe.set_status("error", "slow stock")
    return user + 0.5

@p.span("fails", attributes={"n": "i8"})
def fails(n):
    raise KeyError("missing %d" % n)

@p.span("bad.values", attributes={"count": "u8", "name": str})
def bad_values(count, name):
    return None

p.load()
context.id_random.seed(1234)

async def main():
    for u in range(6):
        await checkout(u, "t\u00e9\u00e9")

asyncio.run(main())
try:
    fails(-3)
except KeyError:
    pass
bad_values(300, None)
with db("ROLLBACK", 1):
    pass
print(json.dumps({n: int(probe.enabled) for n, probe in p.probes.items()}))
'''


def run_app(tmp_path, name, *tracer_args):
    script = tmp_path / "app.py"
    script.write_text(APP)
    out, stats_file = tmp_path / ("%s.jsonl" % name), tmp_path / ("%s-stats.json" % name)
    r = run_spanprobe("trace", "--exporter", "jsonl", "--output", str(out), "--stats-file", str(stats_file),
                      *tracer_args, "--", sys.executable, str(script), timeout=120)
    assert r.returncode == 0, r.stderr
    semaphores = json.loads(r.stdout.strip().splitlines()[-1])
    return read_jsonl(out), stats_of(stats_file), semaphores


def _comparable(span):
    """A span without what differs between two runs of the same application: times, its process and thread."""
    out = dict(span)
    for key in ("start_time_unix_nano", "end_time_unix_nano", "duration_ns"):
        out.pop(key)
    out["events"] = [{k: v for k, v in e.items() if k != "time_unix_nano"} for e in span["events"]]
    assert span["attributes"]["thread.id"] == span["resource"]["process.pid"]   # its main thread
    out["attributes"] = {k: v for k, v in span["attributes"].items() if k != "thread.id"}
    out["resource"] = {k: v for k, v in span["resource"].items() if k not in ("process.pid", "process.parent_pid")}
    return out


def test_the_one_hit_probe_gives_the_spans_the_pair_gives(tmp_path):
    one, one_stats, one_sems = run_app(tmp_path, "one")
    # The same application, the same ids, the other path.
    pair, pair_stats, pair_sems = run_app(tmp_path, "pair", "--paired-spans")
    spans = ("checkout", "reserve", "db_query", "fails", "bad_values")
    assert {n: one_sems[n] for n in one_sems if n.endswith(("__start", "__end", "__span"))} == {
        **{s + "__span": 1 for s in spans}, **{s + "__start": 0 for s in spans}, **{s + "__end": 0 for s in spans}}
    assert {n: pair_sems[n] for n in pair_sems if n.endswith(("__start", "__end", "__span"))} == {
        **{s + "__span": 0 for s in spans}, **{s + "__start": 1 for s in spans}, **{s + "__end": 1 for s in spans}}
    assert len(one) == len(pair) == 6 * 3 + 3 and one_stats["lost"] == pair_stats["lost"] == 0
    assert one_stats["kernel"]["starts"] == one_stats["kernel"]["spans"] == len(one)
    assert one_stats["kernel"]["end_without_start"] == one_stats["kernel"]["bad_span_payload"] == 0
    by_id = {s["span_id"]: s for s in pair}
    assert set(by_id) == {s["span_id"] for s in one}
    for span in one:
        other = by_id[span["span_id"]]
        assert _comparable(span) == _comparable(other)
        assert 0 < span["duration_ns"] == span["end_time_unix_nano"] - span["start_time_unix_nano"]
    # what the comparison covers: parents, errors, set_status, conversion failures, bytes and events
    checkouts = [s for s in one if s["name"] == "checkout"]
    for c in checkouts:
        children = sorted(s["name"] for s in one if s["parent_span_id"] == c["span_id"])
        assert children == ["db.query", "reserve"]
        assert [e["name"] for e in c["events"]] == ["order.note"]
    assert next(c for c in checkouts if c["attributes"]["user.id"] == 3)["status"] == {
        "code": "ERROR", "description": "slow stock"}
    (failed,) = [s for s in one if s["name"] == "fails"]
    assert failed["status"]["code"] == "ERROR" and failed["attributes"]["n"] == -3
    (bad,) = [s for s in one if s["name"] == "bad.values"]
    assert "count" not in bad["attributes"] and "name" not in bad["attributes"]
    (rollback,) = [s for s in one if s["attributes"].get("db.query.text") == "ROLLBACK"]
    assert "db.rows" not in rollback["attributes"]


MID_SPAN_APP = r'''
import json, sys
import spanprobe
p = spanprobe.Provider("midspan")

@p.span("long", attributes={"n": int})
def long(n):
    print(json.dumps({"in_span": n}), flush=True)
    sys.stdin.readline()

@p.span("short", attributes={"n": int})
def short(n):
    pass

p.load()
print(json.dumps({"pid": __import__("os").getpid()}), flush=True)
long(1)
sys.stdin.readline()
short(2)
long(3)
print(json.dumps({"done": True}), flush=True)
sys.stdin.readline()
'''


def test_a_remembering_sampler_pairs_start_and_end_probes(tmp_path):
    spans, stats, semaphores = run_app(tmp_path, "pair", "--sampler", "parentbased_traceidratio", "--sampler-arg", "1")
    assert semaphores["checkout__start"] == semaphores["checkout__end"] == 1 and semaphores["checkout__span"] == 0
    assert len(spans) == 6 * 3 + 3 and stats["lost"] == 0


class _PipedApp:
    """The test app ``source``, its stdin and stdout piped, and the tracer a test attaches to it (attach());
    finish() lets both run to their end, leaving the with-block kills what is still running."""

    def __init__(self, tmp_path, source):
        script = tmp_path / "app.py"
        script.write_text(source)
        self.proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.out, self.stats_file = tmp_path / "spans.jsonl", tmp_path / "stats.json"
        self.tracer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        if self.tracer is not None:
            self.tracer.kill()

    def send(self, text):
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def read(self):
        return json.loads(self.proc.stdout.readline())

    def attach(self, pid, sites):
        self.tracer = jsonl_tracer(self.out, self.stats_file, "--pid", str(pid))
        wait_attached(self.tracer, sites)

    def exported(self, n):
        """Wait until the tracer has written ``n`` spans."""
        assert wait_until(lambda: len(read_jsonl(self.out)) >= n), self.tracer.stopped()

    def finish(self):
        """Close the app's stdin; the app exits, and the tracer with it."""
        self.proc.stdin.close()
        self.proc.wait(30)
        assert self.tracer.wait(60) == 0, self.tracer.stderr


def test_a_tracer_attaching_mid_span_exports_no_half_span(tmp_path):
    with _PipedApp(tmp_path, MID_SPAN_APP) as app:
        pid = app.read()["pid"]
        assert app.read() == {"in_span": 1}   # long(1) began before any tracer
        app.attach(pid, 2)                     # long's and short's span probes
        app.send("\n\n")                       # long(1) ends; then short(2), long(3)
        assert app.read() == {"in_span": 3}
        app.send("\n")
        assert app.read() == {"done": True}
        app.exported(2)
        app.finish()
    spans = read_jsonl(app.out)
    assert sorted((s["name"], s["attributes"]["n"]) for s in spans) == [("long", 3), ("short", 2)]
    stats = stats_of(app.stats_file)
    assert stats["lost"] == 0 and stats["kernel"]["end_without_start"] == 0 and stats["unmatched_exited"] == 0


def test_books_balance_when_the_ring_buffer_overflows_on_the_one_hit_path(tmp_path):
    """A 1 MiB ring buffer the tracer drains only every 2 s, and spans fired far faster: every span is
    exported (some from the rescue ring) or counted lost (ring buffer full), and the span metrics still count
    every one."""
    tracee = SpanPath("one_hit", lambda **kw: Tracee(**kw)).tracee()
    try:
        tracee.send("load shop")
        stats_file = tmp_path / "stats.json"
        tracer = Tracer("trace", "--pid", str(tracee.pid), "--exporter", "jsonl", "--output", str(tmp_path / "o"),
                        "--stats-file", str(stats_file), "--ring-buffer-mb", "1", "--drain-interval", "2",
                        "--metrics-exporter", "console", "--metrics-interval", "600")
        try:
            wait_attached(tracer, ONE_HIT_SITES)
            fired = tracee.send("spans shop 3000", timeout=120)["spans"]
            tracee.send("exit 0")
            assert tracer.wait(60) == 0, tracer.stderr
        finally:
            tracer.kill()
    finally:
        tracee.close()
    stats = stats_of(stats_file)
    k = stats["kernel"]
    assert k["span_rb_full"] > 0, stats
    assert k["rescued"] > 0, stats     # the rescue ring filled too, and what it took was exported
    lost_in_kernel = k["span_rb_full"] + k["span_reserve_failed"]
    assert stats["exported"] + lost_in_kernel == fired, stats
    assert stats["lost"] == lost_in_kernel + k["point_rb_full"] + k["point_reserve_failed"], stats   # events too
    assert k["starts"] == fired and k["end_without_start"] == k["bad_span_payload"] == 0
    calls = {}
    for line in tracer.stderr.splitlines():
        if line.startswith("metrics: traces.span.metrics.duration"):
            fields = dict(f.split("=", 1) for f in line.split()[2:] if "=" in f)
            calls[line] = int(fields["calls"])
    assert sum(calls.values()) == fired, tracer.stderr


BAD_PAYLOAD_APP = r'''
import spanprobe
from spanprobe.abi.protocol import END_ARGS, SPAN_ARGS, START_ARGS
p = spanprobe.Provider("badpayload")
p.declare("op_start", START_ARGS, "span_start")
p.declare("op_end", END_ARGS, "span_end")
one = p.declare("op_span", SPAN_ARGS, "span")
p.add_schema_span({"name": "op", "start": "op_start", "end": "op_end", "span": "op_span"})
p.load()
one.fire(b"\x00" * 10)   # not the payload of a span of this shape
'''


def test_a_payload_of_the_wrong_size_is_counted_lost(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(BAD_PAYLOAD_APP)
    out, stats_file = tmp_path / "spans.jsonl", tmp_path / "stats.json"
    r = run_spanprobe("trace", "--exporter", "jsonl", "--output", str(out), "--stats-file", str(stats_file),
                      "--", sys.executable, str(script), timeout=120)
    assert r.returncode == 0, r.stderr
    stats = stats_of(stats_file)
    assert read_jsonl(out) == [] and stats["kernel"]["bad_span_payload"] == 1 and stats["lost"] == 1, stats
    assert "unreadable one-hit span payload: 1" in r.stderr


BOUND_APP = r'''
import json
import spanprobe
from spanprobe.spans import context

p = spanprobe.Provider("bound")

@p.span("cut", attributes={"n": int, "a": str, "b": str})
def cut(n, a, b):
    raise ValueError(a)

@p.span("back", attributes={"n": int}, record_return=str)
def back(n):
    return "x" * n   # an end str with no start str before it: the payload's first (aligned) slot

p.load()
context.id_random.seed(99)
for n in LENGTHS:
    try:
        cut(n, "x" * n, "\u00e9" * n)   # one byte a character, and two: cut inside a character too
    except ValueError:
        pass
    back(n)
print(json.dumps({n: int(probe.enabled) for n, probe in p.probes.items()}))
'''
LENGTHS = (0, 9, 10, 11, 128, 129, 255, 256, 257, 258, 400)


@pytest.mark.parametrize("size", [10, 256, 257])
def test_strings_at_and_past_the_bound_are_cut_as_the_pair_cuts_them(tmp_path, size):
    # The payload carries a str's first PAYLOAD_STR bytes inline: cut where the start and end probes' reads cut
    # (at and past the default capture of 256 bytes), marked truncated alike, error message included; a tracer
    # capturing more than the payload carries traces the pair.
    (tmp_path / "app.py").write_text(BOUND_APP.replace("LENGTHS", repr(LENGTHS)))
    runs = {}
    for name, extra in (("one", ()), ("pair", ("--paired-spans",))):
        out = tmp_path / ("%s.jsonl" % name)
        r = run_spanprobe("trace", "--exporter", "jsonl", "--output", str(out), "--string-size", str(size),
                          *extra, "--", sys.executable, str(tmp_path / "app.py"), timeout=120)
        assert r.returncode == 0, r.stderr
        runs[name] = (read_jsonl(out), json.loads(r.stdout.strip().splitlines()[-1]))
    (one, sems), (pair, _) = runs["one"], runs["pair"]
    assert sems["cut__span"] == sems["back__span"] == (0 if size == 257 else 1)
    assert len(one) == len(pair) == 2 * len(LENGTHS)
    by_id = {s["span_id"]: s for s in pair}
    for span in one:
        assert _comparable(span) == _comparable(by_id[span["span_id"]])
    for name in ("cut", "back"):
        assert sorted(s["attributes"]["n"] for s in one if s["name"] == name) == sorted(LENGTHS)
    for span in one:
        n, attrs = span["attributes"]["n"], span["attributes"]
        if span["name"] == "back":
            assert attrs["result"] == "x" * min(n, size)
            assert attrs.get("spanprobe.truncated", []) == (["result"] if n > size else [])
            continue
        assert attrs["a"] == "x" * min(n, size) and attrs["b"] == "\u00e9" * min(n, size // 2)
        assert sorted(attrs.get("spanprobe.truncated", [])) == [k for k, cut in (("a", n > size), ("b", 2 * n > size))
                                                                if cut]


BUSY_APP = r'''
import json, sys
import spanprobe
p = spanprobe.Provider("busy")

@p.span("op", attributes={"n": int})
def op(n):
    pass

p.load()
print(json.dumps({"pid": __import__("os").getpid()}), flush=True)
for line in sys.stdin:
    first, count = map(int, line.split())
    for n in range(first, first + count):
        op(n)
    print(json.dumps({"fired": count}), flush=True)
'''


def test_a_hit_while_the_handlers_scratch_is_held_is_dropped_and_counted(tmp_path):
    """The one-hit handler's per-CPU scratch is held while a handler runs (a busy flag): a hit that finds it
    held, as it would while a preempted handler holds it on a fully preemptible kernel, is dropped and
    counted lost (one_hit_busy), and the spans after the flag is let go are exported whole. The flag is set
    by hand here, in the tracer's map, on every CPU: this machine's kernel does not preempt BPF programs."""
    from tests.support.bpf_maps import maps_named

    with _PipedApp(tmp_path, BUSY_APP) as app:
        def fire(first, count):
            app.send("%d %d\n" % (first, count))
            assert app.read() == {"fired": count}

        app.attach(app.read()["pid"], 1)
        fire(0, 2)
        app.exported(2)
        (scratch,) = maps_named(app.tracer.proc.pid, "sp_one_0")
        try:
            scratch.set_percpu(0, (1).to_bytes(8, "little"))     # held, on every CPU
            fire(100, 5)
            scratch.set_percpu(0, b"")                            # let go
            fire(200, 3)
        finally:
            scratch.close()
        app.exported(5)
        app.finish()
    assert sorted(s["attributes"]["n"] for s in read_jsonl(app.out)) == [0, 1, 200, 201, 202]
    stats = stats_of(app.stats_file)
    assert stats["kernel"]["one_hit_busy"] == 5 and stats["lost"] == 5 and stats["exported"] == 5, stats
    assert "one-hit handler busy (preempted): 5" in app.tracer.stderr
