"""Processes and providers coming and going while the tracer runs, and the capture options."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from tracer_helpers import HERE, Tracer, run_spanprobe, wait_until

pytestmark = pytest.mark.bpf


def read_jsonl(path):
    """The complete lines of a file the tracer may still be writing (a last partial line waits)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n") and line.strip()]


def stats_of(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture
def out(tmp_path):
    return str(tmp_path / "spans.jsonl")


@pytest.fixture
def stats_file(tmp_path):
    return str(tmp_path / "stats.json")


def jsonl_tracer(out, stats_file, *args):
    return Tracer("trace", "--exporter", "jsonl", "--output", out, "--stats-file", stats_file,
                  "--duration", "120", *args)


def test_late_provider_then_unload(tracee, out, stats_file):
    """A provider loaded after the tracer started is traced; an unloaded one is detached."""
    tracee.send("load first")
    tracer = jsonl_tracer(out, stats_file, "--pid", str(tracee.pid), "-v")
    try:
        tracee.send("wait first 30")
        t0 = time.monotonic()
        tracee.send("load second")
        tracee.send("wait second 30")
        pickup = time.monotonic() - t0
        print("second provider picked up in %.2f s" % pickup)
        assert pickup < 1.5  # same argument shapes as "first": no compile needed
        tracee.send("spans second 1")
        tracee.send("unload first")
        tracee.send("spans second 1")
        assert wait_until(lambda: len(read_jsonl(out)) >= 6)
        time.sleep(1.0)  # a few rescans: the unloaded provider is noticed
        assert tracer.stop() == 0, tracer.stderr
    finally:
        tracer.kill()
    assert "provider first unloaded; detaching" in tracer.stderr
    spans = read_jsonl(out)
    assert {s["scope"] for s in spans} == {"second"}
    assert len(spans) == 6
    assert stats_of(stats_file)["lost"] == 0


def test_exiting_process_is_detached_and_open_spans_counted(tracee_factory, out, stats_file):
    a, b = tracee_factory(), tracee_factory()
    for t in (a, b):
        t.send("load shop")
    tracer = jsonl_tracer(out, stats_file, "--pid", str(a.pid), "--pid", str(b.pid))
    try:
        a.send("wait shop 30")
        b.send("wait shop 30")
        a.send("open shop")  # a span that will never end: its process dies
        a.send("spans shop 1")
        a.proc.kill()
        a.proc.wait()
        b.send("spans shop 1")
        assert wait_until(lambda: len(read_jsonl(out)) >= 6)
        b.send("exit 0")
        # --pid: when every traced process is gone, the tracer exits by itself.
        assert tracer.wait(30) == 0, tracer.stderr
    finally:
        tracer.kill()
    stats = stats_of(stats_file)
    assert stats["unmatched_exited"] == 1
    assert "1 starts never ended (1 process exited" in tracer.stderr
    assert {s["resource"]["process.pid"] for s in read_jsonl(out)} == {a.pid, b.pid}


def test_all_traces_processes_started_later(tracee_factory, out, stats_file):
    """--all: processes that start after the tracer are traced (others on the host may be too)."""

    def ours():
        pids = {x.pid for x in (t, t2) if x is not None}
        return [s for s in read_jsonl(out) if s["resource"]["process.pid"] in pids]

    t = t2 = None
    tracer = jsonl_tracer(out, stats_file, "--all")
    try:
        time.sleep(1.5)  # the tracer is up before the application exists
        t = tracee_factory()
        t.send("load late")
        t.send("wait late 30")
        t.send("spans late 2")
        assert wait_until(lambda: len(ours()) >= 6)
        t.send("exit 0")
        time.sleep(0.5)
        t2 = tracee_factory()
        t2.send("load later")
        t2.send("wait later 30")
        t2.send("plain later 1")
        assert wait_until(lambda: len(ours()) >= 7)
        assert tracer.stop() == 0, tracer.stderr
    finally:
        tracer.kill()
    assert {s["resource"]["process.pid"] for s in ours()} == {t.pid, t2.pid}
    assert len(ours()) == 7
    assert stats_of(stats_file)["lost"] == 0


EARLY = """
import sys
sys.path.insert(0, %r)
import tracee
p, probes = tracee.make_provider("early")
probes["tick"].fire(1, "first")      # right after load(): no time for a rescan
tracee.fire_trace(probes, 0)
sys.exit(7)
""" % str(HERE)


@pytest.mark.parametrize("backing", ["memfd", "file"])
def test_command_traced_from_first_probe_and_exit_status(tmp_path, out, stats_file, backing):
    """Both ways the SDK loads a provider: a memfd, or a file in a private directory."""
    script = tmp_path / "early.py"
    script.write_text(EARLY)
    env = {"SPANPROBE_NO_MEMFD": "1", "SPANPROBE_RUNTIME_DIR": str(tmp_path)} if backing == "file" else {}
    r = run_spanprobe("trace", "--exporter", "jsonl", "--output", out, "--stats-file", stats_file,
                      "--", sys.executable, str(script), timeout=120, env=env)
    assert r.returncode == 7, r.stderr
    names = sorted(s["name"] for s in read_jsonl(out))
    assert names == ["GET /items", "db.query", "db.query", "early.tick"], r.stderr
    assert stats_of(stats_file)["lost"] == 0


def test_command_not_found(out):
    r = run_spanprobe("trace", "--exporter", "jsonl", "--output", out, "--", "/nonexistent/program")
    assert r.returncode == 1
    assert "cannot run /nonexistent/program" in r.stderr


def test_file_backed_provider(tracee_factory, tmp_path, out, stats_file):
    tracee = tracee_factory(env={"SPANPROBE_NO_MEMFD": "1", "SPANPROBE_RUNTIME_DIR": str(tmp_path)})
    tracee.send("load shop")
    maps = open("/proc/%d/maps" % tracee.pid).read()
    assert "/libshop.so" in maps and "memfd:spanprobe" not in maps
    tracer = jsonl_tracer(out, stats_file, "--pid", str(tracee.pid))
    try:
        tracee.send("wait shop 30")
        tracee.send("spans shop 1")
        assert wait_until(lambda: len(read_jsonl(out)) >= 3)
        assert tracer.stop() == 0
    finally:
        tracer.kill()
    assert sorted(s["name"] for s in read_jsonl(out)) == ["GET /items", "db.query", "db.query"]


def test_spans_from_many_threads(tracee, out, stats_file):
    tracee.send("load shop")
    tracer = jsonl_tracer(out, stats_file, "--pid", str(tracee.pid))
    try:
        tracee.send("wait shop 30")
        fired = tracee.send("threads shop 8")
        assert wait_until(lambda: len(read_jsonl(out)) >= 24, timeout=60)  # 8 threads x 3 spans; slow under load
        assert tracer.stop() == 0
    finally:
        tracer.kill()
    spans = {s["span_id"]: s for s in read_jsonl(out)}
    for trace in fired["traces"]:
        root = spans[trace["root"]]
        assert root["attributes"]["thread.id"] == trace["tid"]
        assert spans[trace["ok_child"]]["parent_span_id"] == trace["root"]


def test_min_duration_threshold_filters_in_kernel(tracee, out, stats_file):
    tracee.send("load shop")
    tracer = jsonl_tracer(out, stats_file, "--pid", str(tracee.pid), "--min-duration", "20ms")
    try:
        tracee.send("wait shop 30")
        ids = tracee.send("slow shop 40")
        assert wait_until(lambda: len(read_jsonl(out)) >= 1)
        time.sleep(0.5)
        assert tracer.stop() == 0
    finally:
        tracer.kill()
    spans = read_jsonl(out)
    assert [s["span_id"] for s in spans] == [ids["slow"]]
    assert spans[0]["duration_ns"] >= 40_000_000
    stats = stats_of(stats_file)
    assert stats["kernel"]["filtered"] == 1 and stats["lost"] == 0


def test_strings_cut_at_capture_length_are_marked(tracee, out, stats_file):
    tracee.send("load shop")
    tracer = jsonl_tracer(out, stats_file, "--pid", str(tracee.pid), "--string-size", "9")
    try:
        tracee.send("wait shop 30")
        tracee.send("long shop 3")    # 6 bytes: whole
        tracee.send("long shop 20")   # 40 bytes: cut at 9 bytes = 4 whole characters
        assert wait_until(lambda: len(read_jsonl(out)) >= 2)
        assert tracer.stop() == 0
    finally:
        tracer.kill()
    short, long_ = sorted(read_jsonl(out), key=lambda s: len(s["attributes"]["url.path"]))
    assert short["attributes"]["url.path"] == "ééé" and "spanprobe.truncated" not in short["attributes"]
    assert long_["attributes"]["url.path"] == "éééé"  # no half character at the cut
    assert sorted(long_["attributes"]["spanprobe.truncated"]) == ["payload", "url.path"]


def test_malformed_provider_skipped_others_traced(tracee, out, stats_file):
    tracee.send("load broken bad=version")
    tracee.send("load good")
    tracer = jsonl_tracer(out, stats_file, "--pid", str(tracee.pid))
    try:
        tracee.send("wait good 30")
        tracee.send("spans good 1")
        assert wait_until(lambda: len(read_jsonl(out)) >= 3)
        assert tracer.stop() == 0
    finally:
        tracer.kill()
    assert "schema version 99 is not supported" in tracer.stderr
    assert "skipped" in tracer.stderr
    assert {s["scope"] for s in read_jsonl(out)} == {"good"}


def test_sigterm_flushes(tracee, out, stats_file):
    tracee.send("load shop")
    tracer = jsonl_tracer(out, stats_file, "--pid", str(tracee.pid))
    try:
        tracee.send("wait shop 30")
        tracee.send("spans shop 5")
        # Stop at once: whatever is still in the ring buffer and queue must be flushed.
        assert tracer.stop(signal.SIGTERM) == 0
    finally:
        tracer.kill()
    assert len(read_jsonl(out)) == 15
    assert stats_of(stats_file)["exported"] == 15
