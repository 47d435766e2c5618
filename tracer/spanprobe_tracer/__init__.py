"""spanprobe tracer: attaches to spanprobe USDT probes with eBPF (bcc) and exports OpenTelemetry spans.

Pieces, in the order data flows through them:

    discovery  find providers in /proc/PID/maps, read and validate their schemas
    program    render bpf/spans.c per argument shape set, compile with bcc, decode records
    uprobe     attach a compiled handler to one probe site in one process
    session    the loop: rescan, attach/detach, drain the ring buffer on a timer
    spans      records -> OpenTelemetry ReadableSpans (ids, times, status, resource)
    pipeline   bounded queue + export thread, retries, loss accounting
    exporters  console trees, JSON lines, OTLP (gRPC, HTTP/protobuf)
    cli        the `spanprobe` command
"""

__version__ = "0.1.0"
