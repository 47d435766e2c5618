"""One span through the OpenTelemetry API: spanprobe's provider against the API's no-op and the SDK.

    sudo .venv/bin/python -m bench.bench_otel_api [--quick] [--rounds N]    # from the repository root

The operation: ``start_as_current_span`` with 5 attributes set and 1 event,
ending the span. Rows, in µs per operation: the application process's CPU
time (all its threads: the SDK's export thread and gRPC's included) and the
wall time of the loop; medians of the rounds and their spread (lowest to
highest). Each round runs every row of its phase in turn, so drift on this
shared machine hits all alike.

phase 1, nothing attached
* no-op: the API's own NoOpTracerProvider, the floor;
* spanprobe, untraced: spanprobe.otel.TracerProvider, no tracer. Target: <= 1.2x no-op;
* SDK + OTLP: the OpenTelemetry SDK, a BatchSpanProcessor whose queue holds a
  whole round (nothing dropped), the official OTLP gRPC exporter to a local
  receiver; each round ends with force_flush, so its export work is in the round.

phase 2, `spanprobe trace --pid <this process> --exporter otlp` to the same receiver
* no-op again, spanprobe traced (its real BPF handler, the uprobe), SDK + OTLP again.
  Target: spanprobe traced <= 1/4 of SDK + OTLP, in CPU time.

The receiver runs in a child process, so the application's CPU is only the
application's. The tracer runs in its own process: its CPU over phase 2 is a
separate line, per span it exported. Needs root and bcc for phase 2.

``--pieces`` instead times each piece of a traced span alone (best of 9
rounds), with the probe's semaphore raised by hand and nothing attached (the
probe site a plain ``nop; ret``): where the application's microseconds go,
the uprobe excluded; and, the same way, the two spans of one request of a
Flask service under the flask and sqlite3 instrumentations (their calls
replayed: what spanprobe's provider costs such a request). No root needed.
"""

import argparse
import gc
import itertools
import multiprocessing
import os
import statistics
import tempfile
import time
import timeit

from opentelemetry import context as otel_context, trace

import spanprobe.otel
from tests.support.load import start_tracer, stop_tracer


def set_five(span):
    span.set_attribute("http.request.method", "GET")
    span.set_attribute("http.route", "/items/<id>")
    span.set_attribute("http.response.status_code", 200)
    span.set_attribute("server.port", 8080)
    span.set_attribute("ratio", 0.5)


def operation(tracer):
    with tracer.start_as_current_span("op") as span:
        set_five(span)
        span.add_event("cache.miss", {"cache.key": "items:1"})


def flask_request(server_tracer, db_tracer, item, all_new=False):
    """The two spans of a Flask request under the flask and sqlite3 instrumentations, as their calls
    make them: a SERVER span started with 11 attributes, each set again, made current with
    trace.use_span, a CLIENT span inside, and the status code. The path (``item``) differs from
    request to request, as a real service's do; ``all_new``: every str value of the server span
    does (the worst case for the encoder's cache of str pairs)."""
    attributes = {"http.method": "GET", "http.server_name": "localhost", "http.scheme": "http",
                  "net.host.name": "localhost", "http.host": "localhost", "net.host.port": 80,
                  "http.target": "/items/%d" % item, "net.peer.ip": "127.0.0.1",
                  "http.user_agent": "Werkzeug/3.1.9", "http.flavor": "1.1", "http.route": "/items/<int:item_id>"}
    if all_new:
        attributes = {k: "%s %d" % (v, item) if type(v) is str else v for k, v in attributes.items()}
    span = server_tracer.start_span("GET /items/<int:item_id>", kind=trace.SpanKind.SERVER, attributes=attributes)
    if span.is_recording():
        for key, value in attributes.items():
            span.set_attribute(key, value)
    with trace.use_span(span, end_on_exit=True):
        with db_tracer.start_as_current_span("SELECT", kind=trace.SpanKind.CLIENT) as query:
            if query.is_recording():
                query.set_attributes({"db.system": "sqlite",
                                      "db.statement": "SELECT name, price FROM items WHERE id = ?"})
        span.set_attribute("http.status_code", 200)


def pieces(n):
    """µs of each piece of a traced span, the semaphore raised by hand (no uprobe)."""
    from spanprobe.otel import payload
    from spanprobe.otel.tracer import span_probe

    probe = span_probe()
    provider = spanprobe.otel.TracerProvider()
    tracer = provider.get_tracer("bench")
    schema = "https://opentelemetry.io/schemas/1.11.0"
    flask, sqlite3 = (provider.get_tracer("opentelemetry.instrumentation." + name, "0.66b1", schema)
                      for name in ("flask", "sqlite3"))
    items = itertools.count()
    probe.enabled.value = 1
    try:
        ended = tracer.start_span("op")
        set_five(ended)
        ended.add_event("cache.miss", {"cache.key": "items:1"})
        ended.end()
        fresh = tracer.start_span("op")
        data = payload.encode(ended)

        def add_event():
            fresh.events = []
            fresh.add_event("cache.miss", {"cache.key": "items:1"})

        rows = {
            "the whole operation": lambda: operation(tracer),
            "start_span": lambda: tracer.start_span("op"),
            "context attach + detach": lambda: otel_context.detach(
                otel_context.attach(trace.set_span_in_context(ended))),
            "5 x set_attribute": lambda: set_five(fresh),
            "add_event, 1 attribute": add_event,
            "payload encode at end()": lambda: payload.encode(ended),
            "probe call (no uprobe)": lambda: probe.emit(data),
            "a Flask request's 2 spans": lambda: flask_request(flask, sqlite3, next(items)),
            "the same, all str new": lambda: flask_request(flask, sqlite3, next(items), all_new=True),
        }
        print("pieces of a traced span, semaphore raised by hand, no uprobe (best of 9 x %d)" % n)
        for name, fn in rows.items():
            print("  %-26s %6.2f us" % (name, min(timeit.repeat(fn, number=n, repeat=9)) / n * 1e6))
    finally:
        probe.enabled.value = 0


def one_round(tracer, flush, n):
    """(CPU µs, wall µs) per operation for ``n`` operations, ``flush()`` (if any) included."""
    c0, w0 = time.process_time_ns(), time.perf_counter_ns()
    for _ in range(n):
        operation(tracer)
    if flush is not None:
        flush()
    return (time.process_time_ns() - c0) / n / 1000, (time.perf_counter_ns() - w0) / n / 1000


def run_rounds(rows, n, rounds):
    """{row: [(cpu, wall), ...]}, the rows interleaved round by round."""
    results = {name: [] for name in rows}
    gc.disable()
    try:
        for _ in range(rounds):
            for name, (tracer, flush) in rows.items():
                results[name].append(one_round(tracer, flush, n))
    finally:
        gc.enable()
    return results


def median_cpu(runs):
    return statistics.median(c for c, _ in runs)


def show(results):
    print("  %-22s %28s %28s" % ("", "CPU us: median (spread)", "wall us: median (spread)"))
    for name, runs in results.items():
        cpu, wall = [c for c, _ in runs], [w for _, w in runs]
        print("  %-22s %8.2f (%6.2f-%6.2f)      %8.2f (%6.2f-%6.2f)" % (
            name, statistics.median(cpu), min(cpu), max(cpu), statistics.median(wall), min(wall), max(wall)))


def receive(conn):
    """Child process: an OTLP/gRPC receiver that counts spans; sends its endpoint, then the count when asked."""
    from tests.support.otlp_receiver import Collector, GrpcReceiver

    receiver = GrpcReceiver(Collector(count_only=True))
    conn.send(receiver.endpoint)
    while conn.recv() == "count":
        conn.send(receiver.collector.count)
    receiver.stop()


class Receiver:
    def __init__(self):
        self.conn, child = multiprocessing.get_context("spawn").Pipe()
        self.proc = multiprocessing.get_context("spawn").Process(target=receive, args=(child,), daemon=True)
        self.proc.start()
        self.endpoint = self.conn.recv()

    def count(self):
        self.conn.send("count")
        return self.conn.recv()

    def stop(self):
        self.conn.send("stop")
        self.proc.join(10)


def sdk_tracer(endpoint, queue):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True),
                                                   max_queue_size=queue))
    return provider.get_tracer("bench"), provider


def cpu_seconds(pid):
    """User + system CPU of process ``pid`` (all its threads), from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (CI smoke run)")
    ap.add_argument("--no-tracer", action="store_true", help="phase 1 only")
    ap.add_argument("--rounds", type=int, help="rounds per phase (default 7, 3 with --quick)")
    ap.add_argument("--pieces", action="store_true", help="time each piece of a traced span instead (no uprobe)")
    args = ap.parse_args()
    n, rounds = (2_000, 3) if args.quick else (20_000, 7)
    rounds = args.rounds or rounds
    if args.pieces:
        pieces(n)
        return

    receiver = Receiver()
    noop = trace.NoOpTracerProvider().get_tracer("bench")
    ours = spanprobe.otel.TracerProvider().get_tracer("bench")
    sdk, provider = sdk_tracer(receiver.endpoint, queue=2 * n)
    sdk_row = (sdk, provider.force_flush)
    sdk_spans, accounting = 0, {}
    try:
        print("phase 1: nothing attached (%d ops x %d rounds)" % (n, rounds))
        one = run_rounds({"no-op": (noop, None), "spanprobe untraced": (ours, None), "SDK + OTLP": sdk_row},
                         n, rounds)
        sdk_spans += n * rounds
        show(one)
        print("  untraced / no-op, CPU: %.2fx (target <= 1.2x)" % (
            median_cpu(one["spanprobe untraced"]) / median_cpu(one["no-op"])))
        if not args.no_tracer:
            with tempfile.TemporaryDirectory() as tmp:
                stats = os.path.join(tmp, "stats.json")
                tracer = start_tracer(stats, "--exporter", "otlp", "--otlp-endpoint", receiver.endpoint,
                                      pids=[os.getpid()], sites=1)
                try:
                    print("phase 2: spanprobe trace attached")
                    tracer_cpu = cpu_seconds(tracer.pid)
                    two = run_rounds({"no-op": (noop, None), "spanprobe traced": (ours, None),
                                      "SDK + OTLP": sdk_row}, n, rounds)
                    tracer_cpu = cpu_seconds(tracer.pid) - tracer_cpu
                finally:
                    err, accounting = stop_tracer(tracer, stats)
            sdk_spans += n * rounds
            show(two)
            traced, sdk_cpu = median_cpu(two["spanprobe traced"]), median_cpu(two["SDK + OTLP"])
            wall = statistics.median(w for _, w in two["spanprobe traced"]) / statistics.median(
                w for _, w in two["SDK + OTLP"])
            print("  traced / SDK + OTLP, CPU: %.2f (target <= 0.25); wall: %.2f" % (traced / sdk_cpu, wall))
            exported = accounting.get("exported", 0)
            print("  tracer (own process) over phase 2: %.2f s CPU, %d spans exported, lost %s: %.1f us/span" % (
                tracer_cpu, exported, accounting.get("lost"), tracer_cpu * 1e6 / max(exported, 1)))
        provider.force_flush()
        received, exported = receiver.count(), accounting.get("exported", 0)
        print("  receiver: %d spans; SDK made %d, spanprobe's tracer exported %d: %s" % (
            received, sdk_spans, exported, "none dropped" if received == sdk_spans + exported else "MISMATCH"))
    finally:
        provider.shutdown()
        receiver.stop()


if __name__ == "__main__":
    main()
