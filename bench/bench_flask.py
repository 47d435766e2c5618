#!/usr/bin/env python3
"""A Flask service under the official OpenTelemetry instrumentations: requests/s and CPU per request.

    sudo .venv/bin/python -m bench.bench_flask                        # 3 rounds x 5 s a mode
    sudo .venv/bin/python -m bench.bench_flask --seconds 3 --rounds 1 --json
    sudo .venv/bin/python -m bench.bench_flask --server werkzeug --load python   # the old harness

(from the repository root; the default load generator is wrk: apt-get install -y wrk).

The service is demo_apps.otel_services.front, loaded on /items/1 (a Flask
route with one sqlite3 query: a server span and a client span per request
when instrumented). By default it runs as in production: under gunicorn
(bench/gunicorn_front.py), one worker process with the gthread worker and
``--service-threads`` threads, so that it stays one GIL-bound process; the
tracer attaches to the worker's pid, the SDK's BatchSpanProcessor runs in
the worker (the app is imported there, after the fork), and the CPU measured
is the worker's (the master only watches it). ``--server werkzeug``: Flask's
development server (werkzeug, a thread a connection) instead, the earlier
harness. Modes, interleaved round by round so that drift on a
shared machine hits them alike; each starts a fresh service:

  bare             the service, no instrumentation
  noop             opentelemetry-instrument (flask, requests, sqlite3...), no
                   configurator and the API's no-op provider
                   (OTEL_PYTHON_CONFIGURATOR=none,
                   OTEL_PYTHON_TRACER_PROVIDER=default_tracer_provider)
  spanprobe        opentelemetry-instrument, spanprobe's provider (by default
                   the instrumentations at work only while a tracer listens:
                   spanprobe.otel.ondemand), nothing attached
  spanprobe-traced the same, `spanprobe trace --pid SERVICE --exporter otlp`
                   attached, exporting OTLP/HTTP to a receiver in this process
  always           spanprobe's provider with SPANPROBE_OTEL_INSTRUMENT=always
                   (the instrumentations at work as installed), nothing attached
  always-traced    the same, traced as spanprobe-traced
  sdk              opentelemetry-instrument, the official SDK in process
                   (BatchSpanProcessor, OTLP/HTTP exporter) to the same receiver

Load, loopback only, one second of warm-up, then ``--seconds`` measured:
wrk (C, epoll: one thread, ``--connections`` keep-alive connections), or
with ``--load python`` ``--clients`` processes of ``--threads`` threads, each
thread one keep-alive HTTP/1.1 connection (http.client, 200-250 µs of CPU a
request on the same vCPUs). Per mode: median requests/s, its ratio to bare,
the service's CPU time per request (user + system, /proc/PID/stat), the
load generator's (its processes' rusage), for the traced modes the
tracer's and the spans it lost; spans received by the receiver.
Targets (issue 12): spanprobe >= 0.95x bare; spanprobe-traced >= 1.2x sdk
(always and always-traced are reported beside them, against the no-op
provider and the SDK).

    sudo .venv/bin/python -m bench.bench_flask --in-process 3000        # no server: Flask's test client

measures instead the CPU per request of every mode with no server, sockets
or threads in the way (the noise of the loaded runs is mostly theirs): the
service's process CPU (the SDK's export thread included) and, traced, the
tracer's (over the measured requests and the tenth more of warm-up after it
attached).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench.bench_http_overhead import cpu_seconds
from tests.support import child_env, otel_services
from tests.support.load import start_tracer, stop_tracer
from tests.support.otlp_receiver import Collector, HttpReceiver

MODES = ("bare", "noop", "spanprobe", "spanprobe-traced", "always", "always-traced", "sdk")
TRACED = ("spanprobe-traced", "always-traced")
#: Issue 12's targets: requests/s of a mode over its baseline's, at least the threshold.
TARGETS = {"spanprobe_vs_bare": ("spanprobe", "bare", 0.95), "traced_vs_sdk": ("spanprobe-traced", "sdk", 1.2)}
#: Reported beside them: SPANPROBE_OTEL_INSTRUMENT=always against the no-op provider and the SDK.
RATIOS = dict(TARGETS, always_vs_noop=("always", "noop", None), always_traced_vs_sdk=("always-traced", "sdk", None))
WARMUP_S = 1.0
PATH = "/items/1"
#: wrk's summary: "N requests in S.SSs", and its error lines (non-2xx answers, socket errors).
WRK_DONE = re.compile(r"(\d+) requests in ([\d.]+)s")
WRK_ERRORS = re.compile(r"(?:Non-2xx or 3xx responses|connect|read|write|timeout):? (\d+)")
NOOP_ENV = dict(otel_services.QUIET, OTEL_PYTHON_CONFIGURATOR="none",
                OTEL_PYTHON_TRACER_PROVIDER="default_tracer_provider")


def client(port: int, threads: int, seconds: float) -> None:
    """One load process: ``threads`` keep-alive connections; prints {"requests", "errors", "total"}."""
    import http.client
    import threading

    start = time.monotonic() + WARMUP_S
    stop = start + seconds
    done, errors, total = [0] * threads, [0] * threads, [0] * threads

    def run(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            t0 = time.monotonic()
            if t0 >= stop:
                break
            try:
                conn.request("GET", PATH)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            total[k] += ok
            if t0 >= start:
                done[k] += ok
                errors[k] += not ok
        conn.close()

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps({"requests": sum(done), "errors": sum(errors), "total": sum(total)}))


def test_client(requests: int, wait: bool = False) -> None:
    """In this process (run under a mode's environment): CPU µs per request of /items/1 through
    Flask's test client, no server and no sockets; prints {"us_per_request"}. ``wait``: first print
    {"pid"} and wait for a line on stdin (a tracer attaching meanwhile)."""
    from demo_apps.otel_services.front import app

    client_ = app.test_client()
    for _ in range(requests // 10):  # warm-up
        client_.get(PATH)
    if wait:
        print(json.dumps({"pid": os.getpid()}), flush=True)
        sys.stdin.readline()
        from spanprobe.otel import ondemand
        if ondemand.active is not None:  # the default mode: the instrumentations at work within a poll
            with ondemand.active.changed:
                if not ondemand.active.changed.wait_for(lambda: ondemand.active.traced, timeout=10):
                    raise SystemExit("bench_flask: the instrumentations did not start with the tracer")
        for _ in range(requests // 10):  # warm-up, traced
            client_.get(PATH)
    start = time.process_time()
    for _ in range(requests):
        client_.get(PATH)
    print(json.dumps({"us_per_request": 1e6 * (time.process_time() - start) / requests}))


def in_process(mode: str, requests: int) -> dict:
    """The CPU µs a request of ``mode`` through Flask's test client (the SDK's export thread included),
    and for spanprobe-traced the tracer's, exporting to a receiver here."""
    receiver = HttpReceiver(Collector(count_only=True))
    env, instrumented = service_env(mode, receiver.endpoint)
    full_env = child_env()
    full_env.update(dict(env, OTEL_SERVICE_NAME="front"))
    traced = mode in TRACED
    argv = [sys.executable, "-m", "bench.bench_flask", "--test-client", str(requests)] + (["--wait"] if traced else [])
    proc = subprocess.Popen(([otel_services.INSTRUMENT] if instrumented else []) + argv, env=full_env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    tracer = None
    stats_file = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    result = {}
    try:
        if traced:
            pid = json.loads(proc.stdout.readline())["pid"]
            tracer = start_tracer(stats_file, *otel_services.otlp_tracer_args(receiver.endpoint)[1:],
                                  pids=[pid], sites=otel_services.SITES_PER_SERVICE)
            tracer_cpu = cpu_seconds(tracer.pid)
            proc.stdin.write("go\n")
            proc.stdin.flush()
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError("%s in process exited with %d" % (mode, proc.returncode))
        result["us_per_request"] = json.loads(out.splitlines()[-1])["us_per_request"]
        if tracer is not None:
            # the tracer's CPU over the measured requests and the warm-up ones before them
            result["tracer_us_per_request"] = 1e6 * (cpu_seconds(tracer.pid) - tracer_cpu) / (requests * 1.1)
            stop_tracer(tracer, stats_file)
            tracer = None
    finally:
        if tracer is not None:
            tracer.kill()
            tracer.wait()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.unlink(stats_file)
        receiver.stop()
    return result


def load(port: int, clients: int, threads: int, seconds: float) -> dict:
    """--load python: ``clients`` processes of ``threads`` http.client connections."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs = [subprocess.Popen([sys.executable, "-m", "bench.bench_flask", "--client", str(port), str(threads),
                               str(seconds)], stdout=subprocess.PIPE, text=True, env=child_env())
             for _ in range(clients)]
    results = [json.loads(p.communicate()[0]) for p in procs]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the load processes, now reaped
    requests = sum(r["requests"] for r in results)
    total = sum(r["total"] for r in results)
    client_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"requests": requests, "rps": requests / seconds, "errors": sum(r["errors"] for r in results),
            "total": total, "client_us_per_request": 1e6 * client_s / max(total, 1)}


def wrk_path() -> str:
    """wrk's path, or SystemExit saying what to install."""
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("bench_flask: wrk not found on PATH; install it (Debian/Ubuntu: apt-get install -y wrk) "
                         "or run with --load python (the http.client load generator)")
    return path


def wrk_run(url: str, connections: int, seconds: int) -> dict:
    """One wrk run (one thread, ``connections`` keep-alive connections): {"requests", "seconds", "errors"}."""
    cmd = [wrk_path(), "-t1", "-c%d" % connections, "-d%ds" % seconds, url]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = WRK_DONE.search(done.stdout)
    if done.returncode or found is None:
        raise RuntimeError("%s: exit status %d\n%s%s" % (" ".join(cmd), done.returncode, done.stdout, done.stderr))
    errors = sum(int(n) for n in WRK_ERRORS.findall(done.stdout))
    return {"requests": int(found.group(1)), "seconds": float(found.group(2)), "errors": errors}


def wrk_load(port: int, connections: int, seconds: int) -> dict:
    """--load wrk: one second of warm-up, then ``seconds`` measured; wrk's CPU from its rusage."""
    url = "http://127.0.0.1:%d%s" % (port, PATH)
    wrk_run(url, connections, int(WARMUP_S))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = wrk_run(url, connections, seconds)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    ok = run["requests"] - run["errors"]
    return {"requests": ok, "rps": ok / run["seconds"], "errors": run["errors"], "total": run["requests"],
            "client_us_per_request": 1e6 * client_s / max(run["requests"], 1)}


def service_env(mode: str, endpoint: str):
    """(env, instrumented) of the service in ``mode``."""
    if mode == "bare":
        return {}, False
    if mode == "noop":
        return NOOP_ENV, True
    if mode == "sdk":
        return otel_services.sdk_env(endpoint), True
    if mode.startswith("always"):
        return otel_services.ALWAYS_ENV, True
    return otel_services.SPANPROBE_ENV, True


def start_service(env: dict, instrumented: bool, server: str, threads: int):
    """(the service, the pid to trace and to measure): werkzeug's dev server is one process;
    under gunicorn the tracer attaches to the worker, and the CPU measured is the worker's."""
    if server == "werkzeug":
        service = otel_services.Service("front", env, instrumented)
        return service, service.pid
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:bench.gunicorn_front", "--threads", str(threads),
            "demo_apps.otel_services.front:app"]
    service = otel_services.Service("front", env, instrumented, argv=argv)
    line = service.proc.stdout.readline()
    if not line.startswith("worker "):
        service.stop()
        raise RuntimeError("gunicorn's worker did not start: %r\n%s" % (line, service.stderr()))
    return service, int(line.split()[1])


def run_mode(mode: str, args) -> dict:
    receiver = HttpReceiver(Collector(count_only=True))
    env, instrumented = service_env(mode, receiver.endpoint)
    service, pid = start_service(env, instrumented, args.server, args.service_threads)
    tracer = None
    stats_file = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    try:
        if mode in TRACED:
            tracer = start_tracer(stats_file, *otel_services.otlp_tracer_args(receiver.endpoint)[1:],
                                  pids=[pid], sites=otel_services.SITES_PER_SERVICE)
        service_cpu = cpu_seconds(pid)
        tracer_cpu = cpu_seconds(tracer.pid) if tracer is not None else 0.0
        if args.load == "wrk":
            result = wrk_load(service.port, args.connections, int(args.seconds))
        else:
            result = load(service.port, args.clients, args.threads, args.seconds)
        result["service_us_per_request"] = 1e6 * (cpu_seconds(pid) - service_cpu) / result["total"]
        if tracer is not None:
            result["tracer_us_per_request"] = 1e6 * (cpu_seconds(tracer.pid) - tracer_cpu) / result["total"]
            _, stats = stop_tracer(tracer, stats_file)
            result["tracer_lost"] = stats["lost"]
            tracer = None
    finally:
        if tracer is not None:
            tracer.kill()
            tracer.wait()
        service.stop()
        os.unlink(stats_file)
        time.sleep(0.3)  # the SDK's last batch, sent at the service's exit
        result_spans = receiver.collector.count
        receiver.stop()
    result["spans_received"] = result_spans
    return result


def summarize(rounds: list) -> dict:
    out = {}
    modes = list(rounds[0])
    for mode in modes:
        runs = [r[mode] for r in rounds]
        out[mode] = {"rps": statistics.median(r["rps"] for r in runs), "rps_runs": [r["rps"] for r in runs],
                     "service_us_per_request": statistics.median(r["service_us_per_request"] for r in runs),
                     "client_us_per_request": statistics.median(r["client_us_per_request"] for r in runs),
                     "errors": sum(r["errors"] for r in runs), "total": sum(r["total"] for r in runs),
                     "spans_received": sum(r["spans_received"] for r in runs)}
        if mode in TRACED:
            out[mode].update(tracer_us_per_request=statistics.median(r["tracer_us_per_request"] for r in runs),
                             tracer_lost=sum(sum(r["tracer_lost"].values()) if isinstance(r["tracer_lost"], dict)
                                             else r["tracer_lost"] for r in runs))
    for mode in modes:
        out[mode]["vs_bare"] = out[mode]["rps"] / out["bare"]["rps"]
    # each target as the ratio of the medians, and round by round (a mode and its baseline run minutes
    # apart at most: drift on a shared machine cancels in the round's ratio)
    out["targets"] = {name: {"ratio": out[mode]["rps"] / out[base]["rps"],
                             "rounds": [r[mode]["rps"] / r[base]["rps"] for r in rounds]}
                      for name, (mode, base, _) in RATIOS.items() if mode in out and base in out}
    return out


def table(summary: dict) -> str:
    lines = ["| mode | requests/s (median) | vs bare | service CPU µs/request | tracer CPU µs/request "
             "| load generator CPU µs/request | runs (req/s) | spans received | spans lost |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    modes = [m for m in MODES if m in summary]
    for mode in modes:
        s = summary[mode]
        traced = mode in TRACED
        lines.append("| %s | %.0f | %.2f | %.0f | %s | %.0f | %s | %d | %s |" % (
            mode, s["rps"], s["vs_bare"], s["service_us_per_request"],
            "%.0f" % s["tracer_us_per_request"] if traced else "-", s["client_us_per_request"],
            ", ".join("%.0f" % x for x in s["rps_runs"]), s["spans_received"],
            s["tracer_lost"] if traced else "-"))
    t = summary["targets"]
    lines.append("")
    for name, t in summary["targets"].items():
        mode, base, threshold = RATIOS[name]
        lines.append("%s / %s: %.2f (%s; round by round %s)" % (
            mode, base, t["ratio"], "target >= %.2f" % threshold if threshold else "no target",
            ", ".join("%.2f" % x for x in t["rounds"])))
    lines.append("errors: %s" % {m: summary[m]["errors"] for m in modes})
    return "\n".join(lines)


def in_process_table(summary: dict) -> str:
    bare = summary["bare"]["us_per_request"]
    lines = ["%-16s %5.0f µs a request (%.2fx bare; runs %s)" % (
        mode, s["us_per_request"], s["us_per_request"] / bare, ", ".join("%.0f" % x for x in s["runs"]))
        for mode, s in summary.items()]
    for mode in (m for m in TRACED if m in summary):
        lines.append("%s: tracer %.0f µs a request; sdk / %s: %.2f" % (
            mode, summary[mode]["tracer_us_per_request"], mode,
            summary["sdk"]["us_per_request"] / summary[mode]["us_per_request"]))
    return "\n".join(lines)


def selected_modes(parser, text: str) -> list:
    """--modes, in MODES order, with the baselines they are compared with; a parser error names a bad one."""
    asked = {m.strip() for m in text.split(",") if m.strip()}
    unknown = asked.difference(MODES)
    if unknown:
        parser.error("--modes: %s not a mode (modes: %s)" % (", ".join(sorted(unknown)), ", ".join(MODES)))
    asked.add("bare")
    if asked.intersection(TRACED):
        asked.add("sdk")
    if "always" in asked:
        asked.add("noop")
    return [m for m in MODES if m in asked]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", nargs=3, type=float, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per mode and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (modes interleaved)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated modes to run (default: all; bare is always run, sdk with a "
                             "traced mode and noop with always: the baselines)")
    parser.add_argument("--server", choices=("gunicorn", "werkzeug"), default="gunicorn",
                        help="gunicorn: one gthread worker (the default); werkzeug: Flask's development server")
    parser.add_argument("--service-threads", type=int, default=2,
                        help="gunicorn's threads in its one worker (default 2: on 2 vCPUs more threads only add "
                             "GIL hand-offs, ~40%% more CPU a request for the bare app at 4 or 8)")
    parser.add_argument("--load", choices=("wrk", "python"), default="wrk",
                        help="wrk (the default; apt-get install -y wrk) or http.client threads in Python")
    parser.add_argument("--connections", type=int, default=8, help="wrk's keep-alive connections")
    parser.add_argument("--clients", type=int, default=1, help="--load python: load generator processes")
    parser.add_argument("--threads", type=int, default=4, help="--load python: connections per load process")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--in-process", type=int, metavar="N", default=0,
                        help="instead: CPU µs a request through Flask's test client, N requests a run, in "
                             "every mode, no server (what the instrumentations, the provider and the SDK "
                             "cost without sockets and threads; the SDK's export thread included)")
    parser.add_argument("--test-client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--wait", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    modes = selected_modes(parser, args.modes)
    if args.client:
        client(int(args.client[0]), int(args.client[1]), args.client[2])
        return 0
    if args.test_client:
        test_client(args.test_client, args.wait)
        return 0
    if args.in_process:
        runs = {mode: [] for mode in modes}
        for _ in range(args.rounds):
            for mode in modes:
                runs[mode].append(in_process(mode, args.in_process))
        summary = {mode: {"us_per_request": statistics.median(r["us_per_request"] for r in rs),
                          "runs": [r["us_per_request"] for r in rs]} for mode, rs in runs.items()}
        for mode in (m for m in TRACED if m in modes):
            summary[mode]["tracer_us_per_request"] = statistics.median(r["tracer_us_per_request"] for r in runs[mode])
        print(json.dumps(summary, indent=2) if args.json else in_process_table(summary))
        return 0
    if args.load == "wrk":
        wrk_path()
        if args.seconds != int(args.seconds) or args.seconds < 1:
            parser.error("--seconds %g: wrk takes whole seconds (1 or more)" % args.seconds)
    rounds = []
    for n in range(args.rounds):
        rounds.append({mode: run_mode(mode, args) for mode in modes})
        print("round %d: %s" % (n + 1, {m: round(r["rps"]) for m, r in rounds[-1].items()}), file=sys.stderr)
    summary = summarize(rounds)
    summary["setup"] = {"server": args.server, "load": args.load, "service_threads": args.service_threads,
                        "connections": args.connections, "clients": args.clients, "threads": args.threads}
    print(json.dumps(summary, indent=2) if args.json else "setup: %s\n%s" % (summary["setup"], table(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
