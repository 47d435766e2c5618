"""Demo 1, ``python -m demo_apps.simplehttp``: its probes read by real BPF, its CLI and shutdown.

The BPF tests attach tests/support/usdt_capture.py (bcc, by pid, knowing
nothing of spanprobe) with the probe layouts the demo declares, and the
seed article's own bcc script, unchanged.
"""

import http.server
import os
import signal
import sys
import urllib.error
import urllib.request

import pytest

from demo_apps.seed.drive import parse_banner, serve_and_trace, write_files
from demo_apps.simplehttp import probes
from demo_apps.simplehttp.handler import ProbedHandler  # also declares the file.copy span
from demo_apps.simplehttp.__main__ import parse_args
from tests.support import Lines, as_dicts, assert_seed_lines, by_probe, capture, declared, hits, raw, trace

SERVER = [sys.executable, "-u", "-m", "demo_apps.simplehttp", "--bind", "127.0.0.1", "--port", "0"]


@pytest.fixture
def server(tmp_path):
    """The demo serving ``tmp_path``: (Lines, port)."""
    proc = Lines(SERVER + ["--directory", str(tmp_path)])
    try:
        yield proc, parse_banner(proc.expect("Serving HTTP on", timeout=60))
    finally:
        proc.stop()


def get(port, path, method="GET"):
    """(status, body) of one request."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def traced(server, requests, count):
    """Run ``requests()`` on the demo under the capture tool; its result, and ``count`` hits, named."""
    proc, port = server
    types, names = declared(probes.provider)
    cap = capture(proc.proc.pid, types)
    try:
        result = requests(port)
        return result, as_dicts(hits(cap, count, timeout=60), names)
    finally:
        cap.stop()


@pytest.mark.bpf
def test_each_download_is_a_request_span_with_a_file_copy_child(tmp_path, server):
    (tmp_path / "a.txt").write_bytes(b"hello, probes\n")
    (tmp_path / "big.bin").write_bytes(os.urandom(200_000))
    (tmp_path / "sub").mkdir()
    targets = ("/a.txt", "/big.bin?x=1", "/sub/", "/missing")
    downloads, records = traced(server, lambda port: {t: get(port, t) for t in targets}, 3 * 5 + 2)
    assert downloads["/missing"][0] == 404

    requests = {r["url.path"]: r for r in by_probe(records, "request__start")}
    ends = {r["span_id"]: r for r in by_probe(records, "request__end")}
    copies = {r["parent_span_id"]: r for r in by_probe(records, "file_copy__start")}
    copy_ends = {r["span_id"]: r for r in by_probe(records, "file_copy__end")}
    transfers = {r["path"]: r for r in by_probe(records, "file_transfer")}
    assert set(requests) == {"/a.txt", "/big.bin", "/sub/", "/missing"} and len(copies) == 3
    for target, (status, body) in downloads.items():
        url_path = target.partition("?")[0]
        start = requests[url_path]
        assert (start["http.request.method"], start["url.scheme"]) == ("GET", "http")
        assert start["client.address"] == "127.0.0.1"
        assert start["server.port"] == server[1] and start["network.protocol.version"] == "1.1"
        assert start["parent_span_id"] == 0 and start["client.port"] > 0
        end = ends[start["span_id"]]
        assert end["status"] == 0 and end["http.response.status_code"] == status
        assert end["http.response.body.size"] == len(body)
        if status != 200:
            assert start["span_id"] not in copies
            continue
        copy = copies[start["span_id"]]
        assert trace(copy) == trace(start) and copy_ends[copy["span_id"]]["status"] == 0
        sent = str(tmp_path) + url_path  # a listing: the directory, trailing slash kept (translate_path)
        assert copy["file.path"] == sent and copy["file.size"] == len(body)
        assert transfers[sent]["client"] == "127.0.0.1" and transfers[sent]["size"] == len(body)


@pytest.mark.bpf
def test_unknown_methods_and_bad_requests_are_spans_too(server):
    def send(port):
        return [raw(port, b"BREW /pot HTTP/1.1\r\n\r\n"), raw(port, b"GET /x HTTP/1.x\r\n\r\n")]

    (brew, bad), records = traced(server, send, 2 * 2)
    assert brew[0] == 501 and bad[0] is None
    starts, ends = by_probe(records, "request__start"), by_probe(records, "request__end")
    # OpenTelemetry's "_OTHER" for a method it does not know; no path for a request line that did not parse.
    assert [(s["http.request.method"], s["url.path"]) for s in starts] == [("_OTHER", "/pot"), ("_OTHER", "")]
    assert [e["span_id"] for e in ends] == [s["span_id"] for s in starts]
    assert [(e["http.response.status_code"], e["http.response.body.size"]) for e in ends] == [
        (501, len(brew[1])), (400, len(bad[1]))]


@pytest.mark.bpf
def test_the_seed_bcc_script_reads_the_demo_unchanged(tmp_path):
    served = write_files(str(tmp_path))
    lines = serve_and_trace(SERVER + ["--directory", served])
    assert_seed_lines(lines, served)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serves_then_stops_cleanly_on_a_signal(tmp_path, server, signum):
    (tmp_path / "a.txt").write_bytes(b"hello\n")
    proc, port = server
    assert get(port, "/a.txt") == (200, b"hello\n")
    assert get(port, "/a.txt", "HEAD") == (200, b"")
    proc.proc.send_signal(signum)
    assert proc.proc.wait(10) == 0
    assert "simplehttp: stopped" in proc.stderr and "Traceback" not in proc.stderr


def test_the_handler_is_the_standard_one_subclassed():
    assert issubclass(ProbedHandler, http.server.SimpleHTTPRequestHandler)
    assert set(probes.provider.probes) == {"file_transfer", "request__start", "request__end", "request__span",
                                           "file_copy__start", "file_copy__end", "file_copy__span"}
    assert [(a.name, a.type.value) for a in probes.file_transfer.args] == [
        ("client", "str"), ("path", "str"), ("size", "u32")], "the seed's probe, argument for argument"


def test_arguments(tmp_path):
    args = parse_args([])
    assert (args.port, args.bind, args.directory) == (8000, "127.0.0.1", os.getcwd())
    args = parse_args(["--port", "0", "--bind", "::1", "--directory", str(tmp_path)])
    assert (args.port, args.bind, args.directory) == (0, "::1", str(tmp_path))
    os.chdir(tmp_path)
    assert parse_args(["--directory", "."]).directory == str(tmp_path), "made absolute, as the seed's paths are"


@pytest.mark.parametrize("argv", [["--port", "65536"], ["--port", "-1"], ["--port", "http"],
                                  ["--directory", "/nonexistent/dir"], ["--verbose"]])
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2 and "usage: python -m demo_apps.simplehttp" in capsys.readouterr().err
