#!/usr/bin/env python3
"""Overhead on a real server: demo_apps.simplehttp's requests/s untraced, traced, and with OpenTelemetry in-process.

    sudo .venv/bin/python -m bench.bench_http_overhead                   # 3 rounds x 10 s a mode
    sudo .venv/bin/python -m bench.bench_http_overhead --seconds 5 --rounds 1 --json

(from the repository root).

Modes, interleaved round by round so that drift on a shared machine hits
them alike; each starts a fresh server:

  baseline   python -m demo_apps.simplehttp, nothing attached: its probes
             cost one semaphore test each
  spanprobe  the same server, `spanprobe trace --pid SERVER --exporter jsonl
             --output /dev/null` attached: two spans and an event a request
             (the request span, its file.copy child, the seed's file_transfer
             probe as an OpenTelemetry event), built and serialized by the
             tracer
  otel-sdk   the same server with its three probes replaced by the same
             spans and attributes made in-process by the OpenTelemetry SDK
             (TracerProvider, BatchSpanProcessor, an exporter that drops them)

Load: ``--clients`` processes of ``--threads`` threads each, a Python HTTP
client over loopback only, fetching a 1 KiB file; the server speaks
HTTP/1.0, so every request is a new connection (as for the seed's server).
One second of warm-up, then ``--seconds`` measured. Reported per mode: the
median requests/s over the rounds, its ratio to baseline, latency p50/p99,
the server's CPU time per request (user + system), and for spanprobe the
spans the tracer exported and lost and the tracer's CPU time per request.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support import child_env
from tests.support.load import start_tracer, stop_tracer

MODES = ("baseline", "spanprobe", "otel-sdk")
WARMUP_S = 1.0


# --- the OpenTelemetry variant of the server (this module, run with --otel-server) --------

def otel_server(directory: str) -> None:
    """demo_apps.simplehttp with its probes made OpenTelemetry SDK spans, the same names and attributes."""
    import contextlib
    from types import SimpleNamespace

    from opentelemetry.trace import SpanKind

    from bench.otel_baseline import otel_tracer

    tracer, _ = otel_tracer("simplehttp")

    def value(v):
        return v() if callable(v) else v

    @contextlib.contextmanager
    def request(method, path, scheme, client_host, client_port, server_port, version):
        attributes = {"http.request.method": method, "url.path": value(path), "url.scheme": scheme,
                      "client.address": client_host, "client.port": client_port, "server.port": server_port,
                      "network.protocol.version": value(version)}
        with tracer.start_as_current_span("http.server.request", kind=SpanKind.SERVER, attributes=attributes) as span:
            def set_end(status, size):
                span.set_attributes({"http.response.status_code": status or 0, "http.response.body.size": size})
            yield SimpleNamespace(set_end=set_end)

    def file_copy(copyfile):
        @functools.wraps(copyfile)
        def traced(handler, source, outputfile):
            attributes = {"file.path": probes.sent_path(handler, source), "file.size": probes.bytes_left(source)}
            with tracer.start_as_current_span("file.copy", attributes=attributes):
                return copyfile(handler, source, outputfile)
        return traced

    def file_transfer(client, path, size):
        span = tracer.start_span("simplehttp.file_transfer",
                                 attributes={"client": value(client), "path": value(path), "size": value(size)})
        span.end(end_time=span.start_time)

    from demo_apps.simplehttp import probes
    probes.request, probes.file_copy = request, file_copy
    probes.file_transfer = SimpleNamespace(fire=file_transfer)
    from demo_apps.simplehttp.__main__ import main  # imports the handler: after the swap
    main(["--port", "0", "--directory", directory])


# --- the load generator (this file, run with --client) ----------------------------------

def client(port: int, threads: int, seconds: float) -> None:
    import http.client
    import threading

    start = time.monotonic() + WARMUP_S
    stop = start + seconds
    done, errors, total, latencies = [0] * threads, [0] * threads, [0] * threads, [[] for _ in range(threads)]

    def run(k: int) -> None:
        while True:
            t0 = time.monotonic()
            if t0 >= stop:
                return
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/file.bin")
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
                conn.close()
            except OSError:
                ok = False
            total[k] += ok
            if t0 >= start:
                done[k] += ok
                errors[k] += not ok
                latencies[k].append(time.monotonic() - t0)

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps({"requests": sum(done), "errors": sum(errors), "total": sum(total),
                      "latencies": [x for lat in latencies for x in lat]}))


# --- the driver ------------------------------------------------------------------------------

def server_argv(mode: str, directory: str) -> list:
    return ([sys.executable, "-m", "bench.bench_http_overhead", "--otel-server", directory] if mode == "otel-sdk"
            else [sys.executable, "-m", "demo_apps.simplehttp", "--port", "0", "--directory", directory])


def attach_tracer(server: subprocess.Popen, stats_file: str) -> subprocess.Popen:
    from demo_apps.simplehttp import probes
    from spanprobe.abi.protocol import ROLE_SPAN_END, ROLE_SPAN_START

    # every probe but the spans' start and end probes: the tracer attaches the spans' one-hit probes
    sites = sum(p.role not in (ROLE_SPAN_START, ROLE_SPAN_END) for p in probes.provider.probes.values())
    return start_tracer(stats_file, "--exporter", "jsonl", "--output", "/dev/null", pids=[server.pid], sites=sites)


def load(port: int, clients: int, threads: int, seconds: float) -> dict:
    procs = [subprocess.Popen([sys.executable, "-m", "bench.bench_http_overhead", "--client", str(port), str(threads),
                               str(seconds)], stdout=subprocess.PIPE, text=True, env=child_env())
             for _ in range(clients)]
    results = [json.loads(p.communicate()[0]) for p in procs]
    latencies = sorted(x for r in results for x in r["latencies"])
    requests = sum(r["requests"] for r in results)
    return {"requests": requests, "rps": requests / seconds, "errors": sum(r["errors"] for r in results),
            "total": sum(r["total"] for r in results),
            "p50_ms": 1e3 * latencies[len(latencies) // 2] if latencies else None,
            "p99_ms": 1e3 * latencies[int(len(latencies) * 0.99)] if latencies else None}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_mode(mode: str, directory: str, clients: int, threads: int, seconds: float) -> dict:
    from demo_apps.seed.drive import serving

    with serving(server_argv(mode, directory)) as (server, port):
        tracer = None
        stats_file = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
        try:
            if mode == "spanprobe":
                tracer = attach_tracer(server, stats_file)
            server_cpu = cpu_seconds(server.pid)
            tracer_cpu = cpu_seconds(tracer.pid) if tracer is not None else 0.0
            result = load(port, clients, threads, seconds)
            result["server_us_per_request"] = 1e6 * (cpu_seconds(server.pid) - server_cpu) / result["total"]
            if tracer is not None:
                result["tracer_us_per_request"] = 1e6 * (cpu_seconds(tracer.pid) - tracer_cpu) / result["total"]
                _, stats = stop_tracer(tracer, stats_file)
                result.update(spans_exported=stats["exported"], spans_lost=stats["lost"],
                              events_exported=stats["events_exported"],
                              events_lost=sum(stats["events_dropped"].values()))
        finally:
            if tracer is not None and tracer.poll() is None:
                tracer.send_signal(signal.SIGINT)
                try:
                    tracer.wait(10)
                except subprocess.TimeoutExpired:
                    tracer.kill()
            os.unlink(stats_file)
    return result


def summarize(rounds: list) -> dict:
    out = {}
    for mode in MODES:
        runs = [r[mode] for r in rounds]
        out[mode] = {"rps": statistics.median(r["rps"] for r in runs), "rps_runs": [r["rps"] for r in runs],
                     "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                     "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                     "server_us_per_request": statistics.median(r["server_us_per_request"] for r in runs),
                     "errors": sum(r["errors"] for r in runs)}
        if mode == "spanprobe":
            out[mode].update(tracer_us_per_request=statistics.median(r["tracer_us_per_request"] for r in runs),
                             spans_exported=sum(r["spans_exported"] for r in runs),
                             spans_lost=sum(r["spans_lost"] for r in runs),
                             events_exported=sum(r["events_exported"] for r in runs),
                             events_lost=sum(r["events_lost"] for r in runs),
                             requests=sum(r["requests"] for r in runs))
    for mode in MODES:
        out[mode]["vs_baseline"] = out[mode]["rps"] / out["baseline"]["rps"]
    return out


def table(summary: dict) -> str:
    lines = ["| mode | requests/s (median) | vs baseline | p50 ms | p99 ms | server CPU µs/request | runs (req/s) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for mode in MODES:
        s = summary[mode]
        lines.append("| %s | %.0f | %.2f | %.2f | %.2f | %.0f | %s |" % (
            mode, s["rps"], s["vs_baseline"], s["p50_ms"], s["p99_ms"], s["server_us_per_request"],
            ", ".join("%.0f" % x for x in s["rps_runs"])))
    sp = summary["spanprobe"]
    lines.append("\nspanprobe: %d spans exported, %d lost, %d events exported, %d lost, for %d measured requests "
                 "(+ warm-up); tracer CPU %.0f µs a request; errors: %s"
                 % (sp["spans_exported"], sp["spans_lost"], sp["events_exported"], sp["events_lost"], sp["requests"],
                    sp["tracer_us_per_request"], {m: summary[m]["errors"] for m in MODES}))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--otel-server", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=3, type=float, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per mode and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (modes interleaved)")
    parser.add_argument("--clients", type=int, default=2, help="load generator processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per load generator")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.otel_server:
        otel_server(args.otel_server)
        return 0
    if args.client:
        client(int(args.client[0]), int(args.client[1]), args.client[2])
        return 0
    if os.geteuid() != 0:
        print("bench_http_overhead: needs root (it runs the tracer)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "file.bin").write_bytes(os.urandom(1024))
        rounds = []
        for i in range(args.rounds):
            rounds.append({mode: run_mode(mode, directory, args.clients, args.threads, args.seconds) for mode in MODES})
            print("round %d: %s" % (i + 1, ", ".join("%s %.0f req/s" % (m, rounds[-1][m]["rps"]) for m in MODES)),
                  file=sys.stderr, flush=True)
    summary = summarize(rounds)
    print(json.dumps(summary, indent=2) if args.json else table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
