"""`spanprobe demo` run as a new user runs it after set-up: the installed command, a real OTLP receiver.

What the receiver gets is checked against what the demo downloaded: for each
download one server span with the file copy as its child, the right path,
size and status, inside the run's wall-clock window. Interrupted, the demo
must stop at once and leave no server process and no scratch directory.
"""

import os
import re
import signal
import subprocess
import time

import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

from spanprobe_tracer.cli.demo.server import DOWNLOADS, FILES
from tests.support import SPANPROBE, Lines
from tests.support.otlp_receiver import GrpcReceiver

pytestmark = pytest.mark.bpf

SCRATCH = re.compile(r"serving \d+ generated files from (\S+)/www")
SERVER_PID = re.compile(r"server pid (\d+) listening")


def assert_nothing_left(stderr):
    """The server the demo named is gone, and so is its scratch directory."""
    pid, scratch = int(SERVER_PID.search(stderr).group(1)), SCRATCH.search(stderr).group(1)
    assert not os.path.exists("/proc/%d" % pid), "demo server %d still running" % pid
    assert not os.path.exists(scratch), "scratch directory %s left behind" % scratch


def test_each_download_reaches_the_collector_as_a_request_span_with_its_file_copy(tmp_path):
    n = len(DOWNLOADS) + 2
    paths = [DOWNLOADS[i % len(DOWNLOADS)] for i in range(n)]
    receiver = GrpcReceiver()
    try:
        t0 = time.time_ns()
        run = subprocess.run([SPANPROBE, "demo", "--otlp-endpoint", receiver.endpoint, "--requests", str(n),
                              "--interval", "0"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        t1 = time.time_ns()
    finally:
        receiver.stop()
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    ok = sum(p != "/missing.txt" for p in paths)
    # The terminal: one tree per download, the copy under its request.
    assert run.stdout.count("└─ http.server.request [server]") == n
    assert run.stdout.count("   └─ file.copy [internal]") == ok
    # ... and the seed's probe, one line a file sent, an event in the span it fired in: client, path, size.
    hits = re.findall(r'^  event simplehttp\.file_transfer  demo_apps\.simplehttp pid \d+  in span [0-9a-f]{16} of trace '
                      r'[0-9a-f]{32}  client="127\.0\.0\.1" path="(\S+)" size=(\d+)$', run.stdout, re.M)
    assert sorted(os.path.basename(path.rstrip("/")) for path, _ in hits) == sorted(
        os.path.basename(p.rstrip("/")) for p in paths if p != "/missing.txt"), run.stdout
    assert re.search(r"traced as %d request spans with %d file-copy children, plus %d hits of the seed's "
                     r"file_transfer probe \(events, %d inside their request's trace\); .* 0 lost"
                     % (n, ok, ok, ok), run.stdout), run.stdout[-500:]
    assert_nothing_left(run.stderr)

    spans = receiver.collector.spans
    requests = [s for s in spans if s.name == "http.server.request"]
    copies = {s.parent_span_id: s for s in spans if s.name == "file.copy"}
    assert sorted(r.attributes["url.path"] for r in requests) == sorted(paths)
    assert len(copies) == ok == len(spans) - n, "one copy per body sent, and no other span"
    # The seed's plain probe: an OpenTelemetry event (OTLP log record) per body sent, with the ids of the
    # span it fired in (the file copy) and its arguments as attributes.
    transfers = {t.span_id: t for t in receiver.collector.logs}
    assert len(transfers) == len(receiver.collector.logs) == ok
    for request in requests:
        a, span = request.attributes, request.span
        assert span.kind == trace_pb2.Span.SPAN_KIND_SERVER and request.parent_span_id == ""
        assert t0 <= span.start_time_unix_nano <= span.end_time_unix_nano <= t1
        assert (a["http.request.method"], a["client.address"]) == ("GET", "127.0.0.1")
        assert request.resource["service.name"] == "demo_apps.simplehttp"
        path = a["url.path"]
        if path == "/missing.txt":
            assert a["http.response.status_code"] == 404 and request.span_id not in copies
            continue
        assert a["http.response.status_code"] == 200
        copy = copies.pop(request.span_id)
        assert copy.trace_id == request.trace_id and copy.span.kind == trace_pb2.Span.SPAN_KIND_INTERNAL
        assert span.start_time_unix_nano <= copy.span.start_time_unix_nano
        assert copy.span.end_time_unix_nano <= span.end_time_unix_nano
        assert copy.attributes["file.path"].endswith("/www" + path)
        # A file's size is what was generated; a listing's is what was sent.
        assert copy.attributes["file.size"] == FILES.get(path[1:], a["http.response.body.size"])
        assert a["http.response.body.size"] == copy.attributes["file.size"]
        transfer = transfers.pop(copy.span_id)
        assert transfer.trace_id == request.trace_id and transfer.record.flags == 1
        assert transfer.event_name == "simplehttp.file_transfer"
        assert copy.span.start_time_unix_nano <= transfer.record.time_unix_nano <= copy.span.end_time_unix_nano
        assert transfer.record.observed_time_unix_nano == transfer.record.time_unix_nano
        t = transfer.attributes
        assert (t["event.name"], t["client"], t["size"]) == ("simplehttp.file_transfer", "127.0.0.1",
                                                             copy.attributes["file.size"])
        assert copy.attributes["file.path"].endswith(t["path"])
        assert transfer.resource == request.resource and transfer.scope == "simplehttp"
    assert not copies, "every file copy is the child of a request span"
    assert not transfers, "every hit of the seed's probe is inside a file copy"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_mid_run_it_stops_promptly_and_leaves_nothing(tmp_path, signum):
    demo = Lines([SPANPROBE, "demo", "--requests", "1000", "--interval", "0.05"], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while "downloading 3/1000" not in demo.stderr:
            assert demo.proc.poll() is None and time.monotonic() < deadline, demo.stderr
            time.sleep(0.05)
        demo.proc.send_signal(signum)
        sent = time.monotonic()
        assert demo.proc.wait(15) == 128 + signum
        assert time.monotonic() - sent < 5, "took %.1f s to stop" % (time.monotonic() - sent)
    finally:
        demo.stop()
    demo.wait()  # the stderr pump's last lines
    assert "interrupted by %s" % signal.Signals(signum).name in demo.stderr
    assert "Traceback" not in demo.stderr
    assert_nothing_left(demo.stderr)
