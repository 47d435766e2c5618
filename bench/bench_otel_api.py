"""One span through the OpenTelemetry API: spanprobe's provider against the API's no-op and the SDK.

    sudo .venv/bin/python -m bench.bench_otel_api [--quick]      # from the repository root

The operation: ``start_as_current_span`` with 5 attributes set and 1 event,
ending the span. Rows, in µs per operation (best of several rounds; each
round interleaves the rows of its phase so drift hits all alike):

phase 1, nothing attached
* no-op: the API's own NoOpTracerProvider, the floor;
* spanprobe, untraced: spanprobe.otel.TracerProvider, no tracer. Target: <= 1.2x no-op;
* SDK + OTLP: the OpenTelemetry SDK, BatchSpanProcessor, the official OTLP gRPC
  exporter to a local receiver (tests/support/otlp_receiver.py): what an
  application pays for in-process export, its export thread included.

phase 2, `spanprobe trace --pid <this process> --exporter otlp` to the same receiver
* no-op again, spanprobe traced (its real BPF handler, the uprobe), SDK + OTLP again.
  Target: spanprobe traced <= 1/4 of SDK + OTLP.

The tracer runs in its own process: its CPU is not in these numbers
(bench_tracer measures it). Needs root and bcc for phase 2.
"""

import argparse
import gc
import os
import tempfile
import time

from opentelemetry import trace

import spanprobe.otel
from tests.support.load import start_tracer, stop_tracer
from tests.support.otlp_receiver import Collector, GrpcReceiver


def operation(tracer):
    with tracer.start_as_current_span("op") as span:
        span.set_attribute("http.request.method", "GET")
        span.set_attribute("http.route", "/items/<id>")
        span.set_attribute("http.response.status_code", 200)
        span.set_attribute("server.port", 8080)
        span.set_attribute("ratio", 0.5)
        span.add_event("cache.miss", {"cache.key": "items:1"})


def per_op_us(tracer, n):
    t0 = time.perf_counter_ns()
    for _ in range(n):
        operation(tracer)
    return (time.perf_counter_ns() - t0) / n / 1000


def best(rows, n, rounds):
    results = {name: [] for name in rows}
    gc.disable()
    try:
        for _ in range(rounds):
            for name, tracer in rows.items():
                results[name].append(per_op_us(tracer, n))
    finally:
        gc.enable()
    return results


def sdk_tracer(endpoint):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    return provider.get_tracer("bench"), provider


def show(results):
    for name, runs in results.items():
        print("  %-22s best %8.2f us   spread %.2f-%.2f" % (name, min(runs), min(runs), max(runs)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (CI smoke run)")
    ap.add_argument("--no-tracer", action="store_true", help="phase 1 only")
    args = ap.parse_args()
    n, rounds = (2_000, 3) if args.quick else (20_000, 7)

    receiver = GrpcReceiver(Collector(count_only=True))
    noop = trace.NoOpTracerProvider().get_tracer("bench")
    ours = spanprobe.otel.TracerProvider().get_tracer("bench")
    sdk, provider = sdk_tracer(receiver.endpoint)
    try:
        print("phase 1: nothing attached (%d ops x %d rounds)" % (n, rounds))
        one = best({"no-op": noop, "spanprobe untraced": ours, "SDK + OTLP": sdk}, n, rounds)
        show(one)
        print("  untraced / no-op: %.2fx (target <= 1.2x)" % (min(one["spanprobe untraced"]) / min(one["no-op"])))
        if args.no_tracer:
            return
        with tempfile.TemporaryDirectory() as tmp:
            stats = os.path.join(tmp, "stats.json")
            tracer = start_tracer(stats, "--exporter", "otlp", "--otlp-endpoint", receiver.endpoint,
                                  pids=[os.getpid()], sites=1)
            try:
                print("phase 2: spanprobe trace attached")
                two = best({"no-op": noop, "spanprobe traced": ours, "SDK + OTLP": sdk}, n, rounds)
            finally:
                err, accounting = stop_tracer(tracer, stats)
        show(two)
        print("  traced / SDK + OTLP: %.2f (target <= 0.25)" % (min(two["spanprobe traced"]) / min(two["SDK + OTLP"])))
        print("  tracer accounting: %s" % {k: v for k, v in accounting.items() if k in ("exported", "lost")})
    finally:
        provider.shutdown()
        receiver.stop()


if __name__ == "__main__":
    main()
