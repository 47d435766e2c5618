"""An application with a provider of every probe role and argument type, for the arm64 Python.

Run by ``.venvs/aarch64/bin/python3.11`` under qemu-aarch64 (tests/sdk/test_aarch64_emulated.py);
it uses only the SDK's public API. Commands on stdin, one JSON reply a line on stdout:

* ``arm LIB PC:PROBE ...``: load the trap library (trap.c) and put a trap on each probe site;
* ``fire``: fire every probe once, as an application would, then reply with each probe's
  semaphore as this process reads it (``probe.enabled``) and dump the traps' records;
* ``exit``.

``EXPECTED`` is what the probes carry, by attribute name: the test imports it from here.
"""

import ctypes
import json
import os
import platform
import sys

#: Every argument type, each at an edge of its range, names unique across the provider.
EVERY_TYPE = {
    "v_i8": ("i8", -128), "v_u8": ("u8", 255), "v_i16": ("i16", -32768), "v_u16": ("u16", 65535),
    "v_i32": ("i32", -2 ** 31), "v_u32": ("u32", 2 ** 32 - 1), "v_i64": ("i64", -2 ** 63),
    "v_u64": ("u64", 2 ** 64 - 1), "v_bool": ("bool", True), "v_f64": ("f64", -1.25e-300),
    "v_str": ("str", "h\u00e9llo, arm64"), "v_bytes": ("bytes", b"\x00\x01\xfe\xff"),
}
SPAN_ATTRS = {"job.id": ("u32", 4000000000), "job.name": ("str", "resize")}
BLOCK_ATTRS = {"db.statement": ("str", "SELECT 1"), "db.shard": ("i16", -12)}
BLOCK_END_ATTRS = {"db.rows": ("u64", 2 ** 40 + 3), "db.cached": ("bool", True)}
EVENT_ATTRS = {"cache.key": ("str", "k\u00fcy"), "cache.size": ("i32", -5)}
CALL_EVENT_ATTRS = {"evict.reason": ("str", "full")}


def otel_payload():
    """What spanprobe.otel fires for a finished OpenTelemetry API span: an OTLP ScopeSpans.
    Made with the SDK's own encoder (opentelemetry-api is not installed for the arm64 Python)."""
    from spanprobe.abi import otlp

    return otlp.scope_span(
        otlp.scope_spans_head(otlp.scope("armapp.otel", "1.0")),
        otlp.scope_spans_tail("https://opentelemetry.io/schemas/1.21.0"),
        0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331, "", 0x00f067aa0ba902b7,
        "GET /items/<int:item_id>", otlp.KIND_OFFSET + 1, 1_700_000_000_000_000_000, 1_700_000_000_002_500_000,
        otlp.key_value_fields(otlp.SPAN_ATTRIBUTES, {"http.route": "/items/<int:item_id>"}, None), 0,
        b"", 0, b"", 0, otlp.status_field(2, "boom"), 0)


OTEL_SPAN = {"span": ("bytes", otel_payload())}
ALL = [EVERY_TYPE, SPAN_ATTRS, BLOCK_ATTRS, BLOCK_END_ATTRS, EVENT_ATTRS, CALL_EVENT_ATTRS, OTEL_SPAN]
EXPECTED = {name: value for group in ALL for name, (_, value) in group.items()}
PROVIDER = "armapp"


def types(group):
    return {name: typ for name, (typ, _) in group.items()}


def values(group):
    return [value for _, value in group.values()]


def declare():
    import spanprobe
    from spanprobe.abi.protocol import OTEL_SPAN_ARGS, ROLE_OTEL_SPAN

    provider = spanprobe.Provider(PROVIDER)
    every = provider.add_probe("every_type", *types(EVERY_TYPE).items())

    @provider.span("job", attributes={"job_id": ("job.id", "u32"), "job_name": ("job.name", str)})
    def job(job_id, job_name):
        event.fire(*values(EVENT_ATTRS))
        evict(*values(CALL_EVENT_ATTRS))

    @provider.span("failing")
    def failing():
        raise KeyError("no such job")

    block = provider.span_block("db.query", kind="client", attributes=types(BLOCK_ATTRS),
                                end_attributes=types(BLOCK_END_ATTRS))
    event = provider.event("cache.miss", types(EVENT_ATTRS))

    @provider.call_event("cache.evict", attributes={"reason": ("evict.reason", str)})
    def evict(reason):
        pass

    otel_span = provider.declare("otel_span", OTEL_SPAN_ARGS, ROLE_OTEL_SPAN)

    def fire():
        every.fire(*values(EVERY_TYPE))
        otel_span.fire(*values(OTEL_SPAN))
        job(*values(SPAN_ATTRS))
        try:
            failing()
        except KeyError:
            pass
        with block(*values(BLOCK_ATTRS)) as span:
            span.set_end(*values(BLOCK_END_ATTRS))
    return provider, fire


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    provider, fire = declare()
    provider.load()
    reply({"pid": os.getpid(), "machine": platform.machine(), "usdt_active": provider.usdt_active,
           "roles": {name: probe.role for name, probe in provider.probes.items()}})
    lib = None
    for line in sys.stdin:
        command, *args = line.split()
        if command == "arm":
            lib = ctypes.CDLL(args[0])
            failed = [a for a in args[1:] if lib.sp_trap_arm(ctypes.c_uint64(int(a.split(":")[0], 0)),
                                                             int(a.split(":")[1])) != 0]
            reply({"armed": len(args) - 1 - len(failed), "failed": failed})
        elif command == "fire":
            fire()
            reply({"enabled": {name: int(probe.enabled) for name, probe in provider.probes.items()}})
            lib.sp_trap_dump(sys.stdout.fileno())
        elif command == "exit":
            provider.unload()
            reply({"bye": True})
            return


if __name__ == "__main__":
    main()
