#!/usr/bin/env python3
"""The tracer's userspace hot path, stage by stage, per span: decode, build, encode (no BPF, no network).

    .venv/bin/python -m bench.bench_hotpath [--spans 20000] [--rounds 7]

(from the repository root). Records of bench_tracer's span shape (a server
span, two start attributes, one end attribute) are laid out in Python as the
BPF code lays them out (tests/support/fake_records.py) and run through the
tracer's own stages: Bindings.decode, SpanBuilder.span, then
export.otlp.wire.encode_request (batches of 1,024, the pipeline's batch) or
the JSON-lines exporter's line. As a baseline in the same run, the official
OTLP encoder (opentelemetry-exporter-otlp-proto-common) encodes the same
spans as SDK ReadableSpans. Last, the path the tracer takes when OTLP is its
only span exporter: export.otlp.records' record -> Span bytes, then the
request. CPU time (process_time), best of ``--rounds``.
What this leaves out and bench_tracer includes: reading the ring buffer,
the export queue and thread, and the gRPC call.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan

    from spanprobe import Arg, ArgType as T, Provider
    from spanprobe.abi.protocol import END_ARGS, START_ARGS
    from spanprobe_tracer.assemble import SpanBuilder
    from spanprobe_tracer.decode import Bindings, plan_decoders
    from spanprobe_tracer.export.jsonl import SpanLines
    from spanprobe_tracer.export.otlp.records import SpanRecordEncoder
    from spanprobe_tracer.export.otlp.wire import encode_request
    from spanprobe_tracer.kernel import CaptureConfig, ProviderPlan
    from tests.support.fake_records import image_of, span_record

    p = Provider("bench0")
    p.declare("req_start", [*START_ARGS, Arg("http.route", T.STR), Arg("user.id", T.I64)], "span_start")
    p.declare("req_end", [*END_ARGS, Arg("http.response.status_code", T.I32)], "span_end")
    p.add_schema_span({"name": "GET /bench", "kind": "server", "start": "req_start", "end": "req_end"})
    plan = ProviderPlan(image_of(p), CaptureConfig())
    span_type = plan.spans[0]
    bindings = Bindings()
    cookie = bindings.bind(plan_decoders(plan)[span_type], 100)
    records = [span_record(span_type, plan.config.string_max, [1000 + i, 0, 77, 1000 + i, 1, "/bench", i],
                           [1000 + i, 0, "", "", 1, 200], cookie=cookie) for i in range(args.spans)]
    resource = Resource({"service.name": "bench", "process.pid": 100, "process.executable.name": "python3",
                         "telemetry.sdk.name": "spanprobe"})
    builder = SpanBuilder(lambda pid: resource, lambda ns: ns + 1_700_000_000_000_000_000)
    line = SpanLines()
    fused = SpanRecordEncoder(plan_decoders(plan)[span_type], builder).encode

    def batches(items):
        return [items[i:i + 1024] for i in range(0, len(items), 1024)]

    def once():
        times = [time.process_time()]
        decoded = [bindings.decode(r) for r in records]
        times.append(time.process_time())
        spans = [builder.span(d) for d in decoded]
        times.append(time.process_time())
        for batch in batches(spans):
            encode_request(batch)
        times.append(time.process_time())
        "".join(map(line, spans))
        times.append(time.process_time())
        readable = [ReadableSpan(name=s.name, context=s.context, parent=s.parent, resource=s.resource,
                                 attributes=s.attributes, kind=s.kind, status=s.status, start_time=s.start_time,
                                 end_time=s.end_time, instrumentation_scope=s.instrumentation_scope) for s in spans]
        times.append(time.process_time())
        for batch in batches(readable):
            encode_spans(batch).SerializeToString()
        times.append(time.process_time())
        encoded = [fused(r, 100, 101) for r in records]
        times.append(time.process_time())
        for batch in batches(encoded):
            encode_request(batch)
        times.append(time.process_time())
        d = [(b - a) / len(records) * 1e6 for a, b in zip(times, times[1:])]
        return {"decode": d[0], "build": d[1], "otlp encode": d[2], "jsonl line": d[3],
                "official encoder (baseline)": d[5], "fused: record to Span bytes": d[6],
                "fused: request": d[7]}

    runs = [once() for _ in range(args.rounds)]
    print("%d spans of bench_tracer's shape, best and worst of %d rounds, CPU µs per span:"
          % (args.spans, args.rounds))
    for name in runs[0]:
        values = sorted(r[name] for r in runs)
        print("  %-28s %6.2f  (%.2f)" % (name, values[0], values[-1]))
    best = {name: min(r[name] for r in runs) for name in runs[0]}
    print("  to OTLP (decode+build+encode) %5.2f; to JSON lines (decode+build+line) %5.2f"
          % (best["decode"] + best["build"] + best["otlp encode"], best["decode"] + best["build"] + best["jsonl line"]))
    print("  our encoder / official: %.2f" % (best["otlp encode"] / best["official encoder (baseline)"]))
    fused_total = best["fused: record to Span bytes"] + best["fused: request"]
    print("  to OTLP fused (export.otlp.records, then the request) %5.2f: %.2f of decode+build+encode"
          % (fused_total, fused_total / (best["decode"] + best["build"] + best["otlp encode"])))


if __name__ == "__main__":
    main()
