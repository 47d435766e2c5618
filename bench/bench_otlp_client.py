#!/usr/bin/env python3
"""What exporting a span over OTLP costs the tracer: spanprobe's OTLP client against the official exporters.

    flock /tmp/spanprobe-bench.lock .venv/bin/python -m bench.bench_otlp_client [--rounds 9] [--batches 20]
                                                                              [--compression gzip]

(from the repository root).

Each row exports the same batches of spans (ReadableSpans to the official exporter, the same as the
tracer's own Spans to ours; the tracer's shape: a
server span with three attributes, one resource, one scope; ``--batch``
spans per export, the tracer's batch size by default) to real receivers
(tests/support/otlp_receiver.py) running in a child process, so that their
decoding is not counted. Rows:

  grpc official            the official OTLP/gRPC exporter as shipped (official encoder): the baseline
  grpc ours                OtlpSpanExporter over GrpcClient (wire, request bytes as they are)
  http ours                OtlpSpanExporter over HttpClient (wire, http.client keep-alive)
  encode only              export.otlp.wire.encode_request alone: what no transport can save

(Before the tracer exported through our client, two more rows measured what
it used then: the official exporters, the gRPC one with otlp_wire plugged into
its private _translate_data; docs/performance.md keeps those numbers.)

Cost per span: CPU time of this process (every thread: grpcio's included)
and wall time, per exported span. Rounds interleave the rows so that noise
on this 2-vCPU machine hits them alike; the median round is reported, with
ratios against the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from tests.support import child_env

RECEIVERS = """
import sys
from tests.support.otlp_receiver import Collector, GrpcReceiver, HttpReceiver
g = GrpcReceiver(Collector(count_only=True), workers=2)
h = HttpReceiver(Collector(count_only=True))
print(g.endpoint, h.endpoint, flush=True)
sys.stdin.read()
"""


def make_spans(n: int):
    """n ReadableSpans shaped like the tracer's (spans.SpanBuilder): one resource and scope for all (the
    official exporter's input; ours gets the same as the tracer's own Spans, tests.support.spans.as_span)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
    from opentelemetry.trace.status import Status, StatusCode

    resource = Resource({"service.name": "bench", "process.pid": 4242, "process.executable.name": "python3",
                         "telemetry.sdk.name": "spanprobe"})
    scope = InstrumentationScope("bench0")
    t0 = time.time_ns()
    return [ReadableSpan(name="GET /bench", context=SpanContext(0x1234 + i, 0x99 + i, False, TraceFlags(1)),
                         parent=None, resource=resource, kind=SpanKind.SERVER, status=Status(StatusCode.UNSET),
                         attributes={"http.route": "/bench/%d" % (i % 7), "user.id": i,
                                     "http.response.status_code": 200},
                         start_time=t0 + i * 1000, end_time=t0 + i * 1000 + 5000, instrumentation_scope=scope)
            for i in range(n)]


def rows(grpc_endpoint: str, http_endpoint: str, compression: str):
    """name -> (export(spans), shutdown), every exporter compressing with ``compression``."""
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as OfficialGrpc

    from spanprobe_tracer.export.otlp.settings import Flags, resolve
    from spanprobe_tracer.export.otlp.span_exporter import OtlpSpanExporter
    from spanprobe_tracer.export.otlp.wire import encode_request

    def ours(endpoint, protocol):
        return OtlpSpanExporter(resolve("traces", Flags(endpoint=endpoint, protocol=protocol,
                                                        compression=compression), {}))

    exporters = {
        "grpc official": OfficialGrpc(endpoint=grpc_endpoint, insecure=True, compression=(
            grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression)),
        "grpc ours": ours(grpc_endpoint, "grpc"),
        "http ours": ours(http_endpoint, "http/protobuf"),
    }
    out = {name: (e.export, e.shutdown) for name, e in exporters.items()}
    out["encode only"] = (encode_request, lambda: None)
    return out


def measure(export, batches) -> tuple:
    """(CPU µs per span, wall µs per span) of exporting every batch once."""
    n = sum(len(b) for b in batches)
    cpu, wall = time.process_time(), time.perf_counter()
    for batch in batches:
        result = export(batch)
        if result is not None and not isinstance(result, bytes) and result.name != "SUCCESS":
            raise SystemExit("an export failed: %s" % result)
    return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1024, help="spans per export (the tracer's batch size)")
    parser.add_argument("--batches", type=int, default=20, help="exports per row per round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--compression", choices=("none", "gzip"), default="none")
    args = parser.parse_args()

    receivers = subprocess.Popen([sys.executable, "-c", RECEIVERS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, env=child_env())
    try:
        grpc_endpoint, http_endpoint = receivers.stdout.readline().split()
        from tests.support.spans import as_span
        official = [make_spans(args.batch) for _ in range(args.batches)]
        ours = [[as_span(s) for s in batch] for batch in official]
        table = rows(grpc_endpoint, http_endpoint, args.compression)
        inputs = {name: official if "official" in name else ours for name in table}
        for name, (export, _) in table.items():   # warm up: connections, caches
            measure(export, inputs[name][:2])
        print("load average before: %.2f %.2f %.2f" % os.getloadavg())
        samples = {name: [] for name in table}
        for _ in range(args.rounds):
            for name, (export, _) in table.items():
                samples[name].append(measure(export, inputs[name]))
        print("load average after:  %.2f %.2f %.2f" % os.getloadavg())
        for _, shutdown in table.values():
            shutdown()
    finally:
        receivers.stdin.close()
        receivers.wait(10)

    base = "grpc official"
    baseline = statistics.median(cpu for cpu, _ in samples[base])
    print("\n%d rounds x %d exports x %d spans, compression %s; median round, per exported span "
          "(base: %s):" % (args.rounds, args.batches, args.batch, args.compression, base))
    print("%-26s %9s %9s %12s" % ("", "CPU µs", "wall µs", "CPU / base"))
    for name, values in samples.items():
        cpu = statistics.median(c for c, _ in values)
        wall = statistics.median(w for _, w in values)
        print("%-26s %9.2f %9.2f %11.2fx" % (name, cpu, wall, cpu / baseline))


if __name__ == "__main__":
    main()
