"""What an active OpenTelemetry span costs a span decorator, against baselines in the same run.

    .venv/bin/python -m bench.bench_otel_parent [--quick]      # from the repository root

A spanprobe span begun with no spanprobe parent asks OpenTelemetry (once the
application has imported it) for the current span, to join its trace. Rows
(ns per call, best of several rounds, each round interleaving all rows):

* undecorated: ``f(a, b)``, the baseline;
* decorated, nothing attached, inside an OTel span: the untraced path, which
  never asks OpenTelemetry. Target: at most +100 ns over the baseline;
* traced root span, outside any OTel span / inside an active OTel span: the
  traced path with the semaphores raised by hand and nothing attached (the
  probe sites are plain ``nop; ret``), so the difference between the two is
  what reading OpenTelemetry's current span costs.

Needs opentelemetry-api and -sdk (the span is an SDK span); no root, no BPF.
"""

import contextlib
import gc
import sys

from bench.bench_decorators import arguments, handle_functions, iterations, per_call_ns, print_rows


def main():
    n_fast, n_slow, rounds = iterations(arguments(__doc__).parse_args().quick)

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    undecorated, decorated, provider = handle_functions("bench_otel_parent")
    span = decorated.__spanprobe_span__
    tracer = TracerProvider().get_tracer("bench")

    def in_otel_span():
        return tracer.start_as_current_span("app")

    # (row, function, iterations, the context it runs in, traced: semaphores raised by hand);
    # each round runs every row once, so drift hits all alike.
    rows = [("undecorated", undecorated, n_fast, in_otel_span, False),
            ("decorated, nothing attached, in an OTel span", decorated, n_fast, in_otel_span, False),
            ("traced root, no OTel span", decorated, n_slow, contextlib.nullcontext, True),
            ("traced, joins the active OTel span", decorated, n_slow, in_otel_span, True)]
    results = {name: float("inf") for name, *_ in rows}
    gc.disable()
    try:
        for _ in range(rounds):
            for name, fn, n, context, traced in rows:
                with context():
                    assert trace.get_current_span().get_span_context().is_valid == (context is in_otel_span)
                    span.start.enabled.value = span.end.enabled.value = int(traced)
                    results[name] = min(results[name], per_call_ns(fn, n))
                    span.start.enabled.value = span.end.enabled.value = 0
    finally:
        gc.enable()
    provider.unload()

    print_rows("spanprobe span decorator and OpenTelemetry's current span", results, 46)
    overhead = results["decorated, nothing attached, in an OTel span"] - results["undecorated"]
    joining = results["traced, joins the active OTel span"] - results["traced root, no OTel span"]
    print(f"\nreading OpenTelemetry's current span: {joining:+.0f} ns a root span")
    ok = overhead <= 100
    print(f"{'PASS' if ok else 'FAIL'}  untraced overhead <= 100 ns{'':14} {overhead:.1f} ns")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
