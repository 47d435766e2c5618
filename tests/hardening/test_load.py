"""Load: short versions of bench/bench_soak.py (processes × threads flat out; the collector down
and back), whose books must balance exactly, and the overload rule that keeps memory flat."""

from __future__ import annotations

import resource
import struct
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from spanprobe import Provider
from spanprobe.abi.protocol import OTEL_SPAN_ARGS, ROLE_OTEL_SPAN
from spanprobe_tracer.decode import Bindings, LoadRecord, SpanRecord, plan_decoders
from spanprobe_tracer.export import ExportPipeline
from spanprobe_tracer.kernel.ringbuf import BUSY_BIT, DISCARD_BIT, RingReader
from spanprobe_tracer.kernel import CaptureConfig, ProviderPlan
from spanprobe_tracer.kernel.layout import HDR, KIND_LOAD, KIND_POINT, KIND_SPAN
from spanprobe_tracer.session import Stats
from spanprobe_tracer.session.drain import Drainer
from tests.support.fake_records import image_of
from tests.support.hardening_helpers import jsonl_tracer, spans_of, stats_of
from tests.support.load import balanced, describe, soak
from tests.support.tracer_helpers import SITES, wait_attached, wait_until

#: Above the tracer's RSS once attached (bcc and LLVM: ~240 MiB here). It grows by ~30 MiB:
#: the export queue (backpressure stops draining at a quarter of its 65,536 spans of ~1 KiB)
#: and one ring buffer's worth of records (16 MiB). It grew by 150-300+ MiB, more the slower
#: the tracer, when one ring-buffer consume could go on for as long as producers kept up.
RSS_GROWTH_BOUND_MIB = 100


@pytest.mark.bpf
def test_soak_flat_out_books_balance_and_memory_is_bounded():
    r = soak(procs=2, threads=2, seconds=8)
    print(describe(r))
    assert balanced(r), describe(r)
    assert r["exported"] > 10_000 and r["open_at_exit"] == 0
    assert r["peak_rss_mib"] - r["rss_after_attach_mib"] < RSS_GROWTH_BOUND_MIB, describe(r)


@pytest.mark.bpf
def test_collector_down_then_back():
    """Down 8 s at 4,000 spans/s with a small queue and ring buffer: what does not fit is counted,
    export resumes, the tracer stops at once."""
    r = soak(procs=1, threads=2, seconds=12, rate=4000, outage=(2, 8),
             tracer_args=["--queue-size", "2048", "--ring-buffer-mb", "1", "--otlp-timeout", "2"])
    print(describe(r))
    assert balanced(r), describe(r)
    assert r["lost_by_reason"]["ring_buffer_full"] > 0 and r["lost_by_reason"]["export_failed"] > 0
    assert r["resume_s"] is not None and r["resume_s"] < 5 and r["received_after_outage"] > 1000
    assert r["stop_s"] < 10


@pytest.mark.bpf
def test_many_processes_under_a_low_soft_fd_limit(apps, tmp_path):
    """Two descriptors per probe site: 6 processes of 6 sites need more than a soft limit of 64.
    The tracer lifts its soft limit to the hard one (it used to fail with EMFILE)."""
    many = [apps() for _ in range(6)]
    for app in many:
        app.send("load shop")

    def low_soft_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    tracer = jsonl_tracer(tmp_path, *[a for app in many for a in ("--pid", str(app.pid))],
                          preexec_fn=low_soft_limit)
    try:
        wait_attached(tracer, 6 * SITES)
        for app in many:
            app.send("spans shop 1")
        arrived = wait_until(lambda: len(spans_of(tmp_path)) == 18)
        assert tracer.stop() == 0
    finally:
        tracer.kill()
    assert arrived, tracer.stderr
    assert "Too many open files" not in tracer.stderr


@pytest.mark.bpf
def test_more_open_spans_than_the_map_holds_are_counted(apps, tmp_path):
    """--max-open-spans 16 and 40 spans started that never end: 16 are held (reported open at
    exit), the 24 starts that do not fit are counted lost (open-span map full), and spans that
    fit before and after are exported whole."""
    app = apps()
    app.send("load shop")
    tracer = jsonl_tracer(tmp_path, "--pid", str(app.pid), "--max-open-spans", "16")
    try:
        wait_attached(tracer, SITES)
        app.send("spans shop 2")
        assert wait_until(lambda: len(spans_of(tmp_path)) == 6), tracer.stderr
        app.send("open shop 40")
        assert tracer.stop() == 0, tracer.stderr
    finally:
        tracer.kill()
    stats = stats_of(tmp_path)
    assert stats["kernel"]["start_map_full"] == 24, stats
    assert stats["open_at_exit"] == 16 and stats["exported"] == 6 and stats["lost"] == 24, stats
    assert "open-span map full: 24" in tracer.stderr


# --- overload without BPF: spans the queue cannot take are not built ------------------------

class _Blocked:
    """An exporter the pipeline below never reaches while the test looks (it lingers for a full
    batch); it takes what is left when the pipeline shuts down."""

    def __init__(self):
        self.exported = []

    def export(self, spans):
        self.exported.append(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


def _records(rec: bytes):
    """A decoder for the test's records: a span record for each span, a load notification for each load."""
    if rec[0] == KIND_LOAD:
        return LoadRecord(100, 100)
    return SpanRecord(None, 100, 100, 100, 0, 0, 1, 1, 0, 1, 0, "", "", {}, None)


def _bindings() -> Bindings:
    """Cookie 1: a plain probe; cookie 2: an otel_span probe (its point records carry spans), in pid 100."""
    p = Provider("shed")
    p.add_probe("plain", x="i32")
    p.declare("span", OTEL_SPAN_ARGS, ROLE_OTEL_SPAN)
    plan = ProviderPlan(image_of(p), CaptureConfig())
    decoders = plan_decoders(plan)
    bindings = Bindings()
    plain, = [decoders[point] for point in plan.points if point.role != ROLE_OTEL_SPAN]
    otel, = [decoders[point] for point in plan.points if point.role == ROLE_OTEL_SPAN]
    assert (bindings.bind(plain, 100), bindings.bind(otel, 100)) == (1, 2)
    return bindings


def test_records_beyond_the_queues_room_are_counted_not_built():
    stats = Stats()
    exporter = _Blocked()
    pipeline = ExportPipeline(exporter, stats, max_queue=10, batch_size=100, linger_s=60)
    built = []
    builder = SimpleNamespace(span=lambda item: built.append(item) or item, take_events=lambda: [])
    drainer = Drainer(None, SimpleNamespace(decode=_records, is_otel_span=_bindings().is_otel_span), builder,
                      pipeline, stats, interval=0.1)
    pipeline.submit(["queued"] * 8)
    span = HDR.pack(KIND_SPAN, 0, 1, 100, 100, 1)
    load = HDR.pack(KIND_LOAD, 0, 0, 100, 100, 0)
    point = HDR.pack(KIND_POINT, 0, 1, 100, 100, 1)
    otel_span = HDR.pack(KIND_POINT, 0, 1, 100, 100, 2)
    try:
        loads = drainer.process([span] * 5 + [point] * 2 + [otel_span] + [load])
        assert len(built) == 2 and pipeline.queued == 10
        assert stats.dropped["queue_full"] == 4   # otel_span records carry spans: counted as spans
        assert stats.events_dropped["queue_full"] == 2  # plain hits and events, counted as events
        assert stats.spans_received == 2 and len(loads) == 1  # never shed: it resumes a process
        assert exporter.exported == []
    finally:
        pipeline.shutdown(1)


def test_one_drain_holds_at_most_a_ring_buffer_of_records():
    """Against producers faster than the tracer, one read would never end: it stops once a ring
    buffer's worth is held, and the next read goes on from there. Busy records stop a read,
    discarded ones are skipped, a record that wraps is read whole (the data is mapped twice)."""
    page, size = 64, 128
    consumer, producer = bytearray(8), bytearray(page + 2 * size + 64)  # slack for the copy past the end

    def put(pos, payload, flags=0):
        for base in (page, page + size):  # the kernel maps the data pages twice
            at = base + pos % size
            struct.pack_into("<II", producer, at, len(payload) | flags, 0)
            producer[at + 8:at + 8 + len(payload)] = payload
        return pos + (len(payload) + 8 + 7) // 8 * 8

    pos = 0
    for i in range(3):
        pos = put(pos, bytes([65 + i]) * 20)          # 28 bytes, padded to 32
    struct.pack_into("<Q", producer, 0, pos)
    ring = RingReader(consumer, producer, size, page, cap_bytes=60)
    assert ring.read() == [b"A" * 20, b"B" * 20]       # the cap is reached after two
    assert ring.read() == [b"C" * 20]
    assert ring.read() == []
    pos = put(pos, b"gone", DISCARD_BIT)
    pos = put(pos, b"w" * 40)                           # wraps past the end of the ring
    busy_at = pos
    pos = put(pos, b"not yet", BUSY_BIT)
    struct.pack_into("<Q", producer, 0, pos)
    assert ring.read() == [b"w" * 40]
    assert struct.unpack_from("<Q", consumer)[0] == busy_at
    put(busy_at, b"not yet")
    assert ring.read() == [b"not yet"]
