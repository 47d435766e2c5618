"""spanprobe tracer: attaches to spanprobe USDT probes with eBPF (bcc) and exports OpenTelemetry spans.

Packages, in the order data flows through them (each imports only from the
stages before it, and from ``errors`` and ``text``):

    discover  where providers are: /proc/PID/maps, their ELF notes and schemas (no BPF)
    kernel    what runs in the kernel and how it gets there: plans, record layouts,
              the rendered C, bcc modules, uprobe links, kernel counters and features
    decode    ring-buffer records -> span, event and probe records (cookie -> decoder)
    assemble  records -> OpenTelemetry spans (ids, times, status, resource)
    export    bounded queue and export thread; console trees, JSON lines, OTLP
    session   the loop that drives them: targets, attach/detach, drain, dlopen stops, accounting
    cli       the `spanprobe` command (list, trace, doctor, demo) on top

docs/architecture.md draws the whole flow, the SDK's half included.
"""

__version__ = "0.1.0"
