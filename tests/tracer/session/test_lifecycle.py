"""Processes and providers coming and going while the tracer runs, and the capture options."""

from __future__ import annotations

import base64
import signal
import sys
import time

import pytest

from tests.support import child_env
from tests.support.tracer_helpers import (SITES, jsonl_tracer, read_jsonl, run_spanprobe, stats_of, wait_attached,
                                          wait_until)

pytestmark = pytest.mark.bpf


@pytest.fixture
def out(tmp_path):
    return str(tmp_path / "spans.jsonl")


@pytest.fixture
def stats_file(tmp_path):
    return str(tmp_path / "stats.json")


def trace_commands(tracee, out, stats_file, commands, spans, *args, sites=SITES):
    """Trace ``tracee`` (--pid, one provider loaded of ``sites`` probe sites); once the tracer is attached,
    send each of ``commands`` and stop the tracer when ``spans`` spans are written. (tracer, replies)."""
    tracer = jsonl_tracer(out, stats_file, "--pid", str(tracee.pid), *args)
    try:
        wait_attached(tracer, sites)
        replies = [tracee.send(command) for command in commands]
        assert wait_until(lambda: len(read_jsonl(out)) >= spans, timeout=60), tracer.stopped()
        assert tracer.stop() == 0, tracer.stderr
    finally:
        tracer.kill()
    return tracer, replies


def test_late_provider_then_unload(tracee, out, stats_file):
    """A provider loaded after the tracer started is traced; an unloaded one is detached."""
    tracee.send("load first")
    tracer = jsonl_tracer(out, stats_file, "--pid", str(tracee.pid), "-vv")
    try:
        wait_attached(tracer, SITES)
        t0 = time.monotonic()
        tracee.send("load second")
        wait_attached(tracer, 2 * SITES)
        print("second provider picked up in %.2f s" % (time.monotonic() - t0))
        tracee.send("spans second 1")
        tracee.send("unload first")
        tracee.send("spans second 1")
        assert wait_until(lambda: len(read_jsonl(out)) >= 6, timeout=60)
        wait_attached(tracer, SITES)  # the unloaded provider is noticed and detached
        assert tracer.stop() == 0, tracer.stderr
    finally:
        tracer.kill()
    assert "provider first unloaded; detaching" in tracer.stderr
    # Same argument shapes as "first": "second" was attached with the module compiled for
    # "first". (Counted, not timed: rescans back off to every 2 s on a loaded machine.)
    assert tracer.stderr.count("compiled BPF module") == 1, tracer.stderr
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
        wait_attached(tracer, 2 * SITES)
        a.send("open shop")  # a span that will never end: its process dies
        a.send("spans shop 1")
        a.proc.kill()
        a.proc.wait()
        b.send("spans shop 1")
        assert wait_until(lambda: len(read_jsonl(out)) >= 6, timeout=60)
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
    sentinel = tracee_factory()
    sentinel.send("load sentinel")
    tracer = jsonl_tracer(out, stats_file, "--all")
    try:
        wait_attached(tracer, SITES, pid=sentinel.pid)  # the tracer is up and scanning
        t = tracee_factory()
        t.send("load late")
        wait_attached(tracer, SITES, pid=t.pid)
        t.send("spans late 2")
        assert wait_until(lambda: len(ours()) >= 6, timeout=60)
        t.send("exit 0")
        wait_attached(tracer, 0, pid=t.pid)  # its exit is noticed
        t2 = tracee_factory()
        t2.send("load later")
        wait_attached(tracer, SITES, pid=t2.pid)
        t2.send("plain later 1")
        assert wait_until(lambda: len(ours()) >= 7, timeout=60)
        assert tracer.stop() == 0, tracer.stderr
    finally:
        tracer.kill()
    assert {s["resource"]["process.pid"] for s in ours()} == {t.pid, t2.pid}
    assert len(ours()) == 7
    assert stats_of(stats_file)["lost"] == 0


EARLY = """
import sys
from tests.support import tracee
p, probes = tracee.make_provider("early")
probes["tick"].fire(1, "first")      # right after load(): no time for a rescan
tracee.fire_trace(probes, 0)
sys.exit(7)
"""


@pytest.mark.parametrize("backing", ["memfd", "file"])
def test_command_traced_from_first_probe_and_exit_status(tmp_path, out, stats_file, backing):
    """Both ways the SDK loads a provider: a memfd, or a file in a private directory."""
    script = tmp_path / "early.py"
    script.write_text(EARLY)
    env = child_env()  # the command imports tests.support
    if backing == "file":
        env.update(SPANPROBE_NO_MEMFD="1", SPANPROBE_RUNTIME_DIR=str(tmp_path))
    r = run_spanprobe("trace", "--exporter", "jsonl", "--output", out, "--stats-file", stats_file,
                      "--", sys.executable, str(script), timeout=120, env=env)
    assert r.returncode == 7, r.stderr
    lines = read_jsonl(out)
    assert sorted(s["name"] for s in lines if "signal" not in s) == ["GET /items", "db.query", "db.query"], r.stderr
    # The plain probe's hit, outside any span: an event (a log line) without span ids.
    (tick,) = [e for e in lines if e.get("signal") == "log"]
    assert (tick["event_name"], tick["trace_id"], tick["span_id"]) == ("early.tick", None, None)
    assert tick["attributes"]["event.name"] == "early.tick"
    stats = stats_of(stats_file)
    assert stats["lost"] == 0 and stats["events_exported"] == 1 and sum(stats["events_dropped"].values()) == 0


def test_command_not_found(out):
    r = run_spanprobe("trace", "--exporter", "jsonl", "--output", out, "--", "/nonexistent/program")
    assert r.returncode == 1
    assert "cannot run /nonexistent/program" in r.stderr


def test_file_backed_provider(tracee_factory, tmp_path, out, stats_file):
    tracee = tracee_factory(env={"SPANPROBE_NO_MEMFD": "1", "SPANPROBE_RUNTIME_DIR": str(tmp_path)})
    tracee.send("load shop")
    maps = open("/proc/%d/maps" % tracee.pid).read()
    assert "/libshop.so" in maps and "memfd:spanprobe" not in maps
    trace_commands(tracee, out, stats_file, ["spans shop 1"], 3)
    assert sorted(s["name"] for s in read_jsonl(out)) == ["GET /items", "db.query", "db.query"]


def test_spans_from_many_threads(tracee, out, stats_file):
    tracee.send("load shop")
    _, (fired,) = trace_commands(tracee, out, stats_file, ["threads shop 8"], 8 * 3)
    spans = {s["span_id"]: s for s in read_jsonl(out)}
    for trace in fired["traces"]:
        root = spans[trace["root"]]
        assert root["attributes"]["thread.id"] == trace["tid"]
        assert spans[trace["ok_child"]]["parent_span_id"] == trace["root"]


def test_min_duration_threshold_filters_in_kernel(span_path, out, stats_file):
    """The threshold is wide (250 ms) because the "fast" span, two probes fired back to back,
    lasts as long as its thread is kept off the CPU between them: on a loaded machine, tens
    of milliseconds. Stopping the tracer drains everything, so a fast span that got through
    would be in the output. On both span paths (on the one-hit path, the start time is the SDK's)."""
    tracee = span_path.tracee()
    tracee.send("load shop")
    _, (ids,) = trace_commands(tracee, out, stats_file, ["slow shop 500"], 1, "--min-duration", "250ms",
                               sites=span_path.sites())
    spans = read_jsonl(out)
    assert [s["span_id"] for s in spans] == [ids["slow"]]
    assert spans[0]["duration_ns"] >= 500_000_000
    stats = stats_of(stats_file)
    assert stats["kernel"]["filtered"] == 1 and stats["lost"] == 0


def test_strings_cut_at_capture_length_are_marked(tracee, out, stats_file):
    tracee.send("load shop")
    # 6 bytes: whole; 40 bytes: cut at 9 bytes = 4 whole characters
    trace_commands(tracee, out, stats_file, ["long shop 3", "long shop 20"], 2, "--string-size", "9")
    short, long_ = sorted(read_jsonl(out), key=lambda s: len(s["attributes"]["url.path"]))
    assert short["attributes"]["url.path"] == "ééé" and "spanprobe.truncated" not in short["attributes"]
    assert long_["attributes"]["url.path"] == "éééé"  # no half character at the cut
    assert sorted(long_["attributes"]["spanprobe.truncated"]) == ["payload", "url.path"]


def test_values_ending_at_a_page_edge_are_read_whole(tracee, out, stats_file):
    """A string or bytes value that ends where the next page is not present is read exactly:
    the tracer reads only the value's own bytes. (A test capture that read a fixed 256 bytes
    got empty strings there, now and then, from Python's heap.)"""
    tracee.send("load shop")
    _, (reply,) = trace_commands(tracee, out, stats_file, ["edge shop"], 1)
    (span,) = read_jsonl(out)
    want = reply["values"]
    assert span["span_id"] == reply["span_id"]
    assert {k: span["attributes"][k] for k in ("http.request.method", "url.path")} == {
        k: want[k] for k in ("http.request.method", "url.path")}
    assert base64.b64decode(span["attributes"]["payload"]["bytes_base64"]).hex() == want["payload"]
    assert "spanprobe.truncated" not in span["attributes"] and span["attributes"]["ratio"] == 0.0
    assert span["status"]["description"] == "%s: %s" % (want["error_type"], want["error_message"])
    assert stats_of(stats_file)["lost"] == 0


def test_malformed_provider_skipped_others_traced(tracee, out, stats_file):
    tracee.send("load broken bad=version")
    tracee.send("load good")
    tracer, _ = trace_commands(tracee, out, stats_file, ["spans good 1"], 3)
    assert "schema version 99 is not supported" in tracer.stderr
    assert "skipped" in tracer.stderr
    assert {s["scope"] for s in read_jsonl(out)} == {"good"}


def test_sigterm_flushes(tracee, out, stats_file):
    tracee.send("load shop")
    tracer = jsonl_tracer(out, stats_file, "--pid", str(tracee.pid))
    try:
        wait_attached(tracer, SITES)
        tracee.send("spans shop 5")
        # Stop at once: whatever is still in the ring buffer and queue must be flushed.
        assert tracer.stop(signal.SIGTERM) == 0
    finally:
        tracer.kill()
    assert len(read_jsonl(out)) == 15
    assert stats_of(stats_file)["exported"] == 15
