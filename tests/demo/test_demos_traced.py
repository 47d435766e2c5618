"""Demos 2 and 3 under the real tracer (`spanprobe trace -- COMMAND --exporter jsonl`), trees checked.

tests/demo/test_simplehttp.py and test_asyncjobs.py read the same probes
with a bare bcc capture tool; here the product reads them: what a user gets
from `spanprobe trace` is what is checked, as OpenTelemetry spans.
"""

import collections
import json
import os
import signal
import sys
import time

import pytest

from demo_apps.asyncjobs.plan import MAX_ATTEMPTS, make_plan
from demo_apps.seed.drive import parse_banner
from spanprobe_tracer.cli.demo.report import Download
from tests.support import Lines, ROOT, SPANPROBE, raw

pytestmark = pytest.mark.bpf

HTTP_SERVER_PROBES = os.path.join(ROOT, "demo_apps", "http_server_probes.toml")


def traced(tmp_path, command, **kw):
    """`spanprobe trace` of ``command`` writing JSON lines; (Lines of the tracer, output path)."""
    out = tmp_path / "spans.jsonl"
    argv = [SPANPROBE, "trace", "--exporter", "jsonl", "--output", str(out), "--"] + command
    return Lines(argv, cwd=tmp_path, **kw), out


def finished(tracer, out, timeout=120):
    """Wait for the tracer; check it exited 0 and lost nothing; its spans by id."""
    assert tracer.wait(timeout) == 0, tracer.stderr  # its summary read to the last line
    assert "lost: 0 " in tracer.stderr and "Traceback" not in tracer.stderr, tracer.stderr
    spans = [json.loads(line) for line in out.read_text().splitlines()]
    return {s["span_id"]: s for s in spans}


def fetch_to_close(port, path):
    """GET ``path`` over HTTP/1.0 and read until the server closes the connection.

    http.server closes it only after its request handler has returned, so by then the
    request's spans have ended: a time taken afterwards bounds their end. (Reading just
    the Content-Length bytes can return while the server thread is still on its way out.)
    """
    status, body = raw(port, b"GET %s HTTP/1.0\r\n\r\n" % path.encode())
    return Download(path, status, len(body))


def children(spans, parent, name=None):
    return [s for s in spans.values() if s["parent_span_id"] == parent["span_id"] and name in (None, s["name"])]


def test_demo_2_unmodified_http_server_request_spans_and_the_seed_probe(tmp_path):
    www = tmp_path / "www"
    (www / "sub").mkdir(parents=True)
    (www / "a.txt").write_bytes(b"hello, unmodified http.server\n")
    (www / "big.bin").write_bytes(os.urandom(300_000))
    server = [sys.executable, "-u", "-m", "spanprobe.instrument", "--config", HTTP_SERVER_PROBES,
              "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(www), "0"]
    # A session of its own: the ^C below reaches tracer and server, as a terminal's would.
    tracer, out = traced(tmp_path, server, start_new_session=True)
    try:
        port = parse_banner(tracer.expect("Serving HTTP on", timeout=120))
        t0 = time.time_ns()
        downloads = {path: fetch_to_close(port, path) for path in ("/a.txt", "/big.bin", "/sub/", "/missing")}
        t1 = time.time_ns()
        os.killpg(tracer.proc.pid, signal.SIGINT)
        spans = finished(tracer, out)
    finally:
        tracer.stop()
    roots = [s for s in spans.values() if s["name"] == "http.server.request"]
    assert len(roots) == len(downloads) == len(spans) / 2
    by_path = {}
    for root in roots:
        assert root["kind"] == "SERVER" and root["parent_span_id"] is None
        assert root["attributes"]["client.address"] == "127.0.0.1" and root["attributes"]["client.port"] > 0
        (get,) = children(spans, root, "GET")
        assert get["trace_id"] == root["trace_id"]
        assert t0 <= root["start_time_unix_nano"] <= get["start_time_unix_nano"]
        assert get["end_time_unix_nano"] <= root["end_time_unix_nano"] <= t1
        by_path[get["attributes"]["url.path"]] = get
    assert sorted(by_path) == sorted(downloads)
    for path, download in downloads.items():
        events = {e["name"]: e["attributes"] for e in by_path[path]["events"]}
        assert events["http.response"] == {"http.response.status_code": download.status}
        if download.status == 404:
            assert "file_transfer" not in events
            continue
        transfer = events["file_transfer"]
        assert transfer["client.address"] == "127.0.0.1" and transfer["file.path"] == str(www) + path
        if not path.endswith("/"):  # the config sizes a listing by os.path.getsize of the directory
            assert transfer["file.size"] == download.size == (www / path[1:]).stat().st_size


def test_demo_3_asyncjobs_trees_across_tasks(tmp_path):
    jobs, seed = 10, 4
    tracer, out = traced(tmp_path, [sys.executable, "-m", "demo_apps.asyncjobs", "--jobs", str(jobs),
                                    "--seed", str(seed)])
    try:
        spans = finished(tracer, out)
    finally:
        tracer.stop()
    (batch,) = [s for s in spans.values() if s["name"] == "batch"]
    assert batch["parent_span_id"] is None and batch["attributes"]["batch.size"] == jobs
    assert {s["trace_id"] for s in spans.values()} == {batch["trace_id"]}, "one batch, one trace"
    for s in spans.values():
        parent = spans.get(s["parent_span_id"])
        if parent is not None:  # a child runs inside its parent, whichever task ran it
            assert parent["start_time_unix_nano"] <= s["start_time_unix_nano"]
            assert s["end_time_unix_nano"] <= parent["end_time_unix_nano"]
    job_spans = {s["attributes"]["job.id"]: s for s in children(spans, batch, "job")}
    plan = make_plan(jobs, seed)
    assert sorted(job_spans) == [job.id for job in plan]
    counted = 1
    for job in plan:
        counted += check_job_tree(spans, job, job_spans[job.id])
    assert counted == len(spans), "no span outside the trees the plan predicts"
    (cancel,) = [e for e in batch["events"] if e["name"] == "job.cancel"]
    assert cancel["attributes"]["job.id"] == next(job.id for job in plan if job.hangs)


def outcome(span):
    """A span's end as the plan names it, read the OpenTelemetry way."""
    if span["status"]["code"] == "ERROR":
        assert span["attributes"]["error.type"] and span["events"][-1]["name"] == "exception"
        return "failed"
    return "cancelled" if span["attributes"].get("spanprobe.cancelled") else "ok"


def check_job_tree(spans, job, span):
    """The shape of one job's subtree: which steps exist and how each ended; its span count."""
    assert outcome(span) == job.outcome
    kinds = collections.Counter(s["name"] for s in children(spans, span))
    attempts = 1 if job.hangs else min(job.fetch_failures + 1, MAX_ATTEMPTS)
    fetched = not job.hangs and job.fetch_failures < MAX_ATTEMPTS
    stored = job.outcome == "ok"
    assert kinds == +collections.Counter({"fetch": attempts, "transform": int(fetched), "store": int(stored)})
    retries = [e for e in span["events"] if e["name"] == "fetch.retry"]
    assert len(retries) == min(job.fetch_failures, MAX_ATTEMPTS - 1)
    fetches = sorted(children(spans, span, "fetch"), key=lambda f: f["attributes"]["fetch.attempt"])
    expected = ["cancelled"] if job.hangs else ["failed"] * (attempts - fetched) + ["ok"] * fetched
    assert [outcome(f) for f in fetches] == expected
    size = 1 + attempts + int(stored)
    for transform in children(spans, span, "transform"):
        chunks = children(spans, transform, "transform.chunk")
        assert len(chunks) == len(job.chunks())
        assert outcome(transform) == ("failed" if job.bad_record >= 0 else "ok")
        size += 1 + len(chunks)
    return size
