"""Draining: ring-buffer records decoded, built into spans and handed to the export pipeline.

One way only: a drain reads what the ring buffer holds, decodes it
(decode.Bindings; span records bound for OTLP come out as encoded spans
already, export.otlp.records), assembles spans and events (assemble.SpanBuilder), submits
them to the pipeline, and *returns* the dlopen() notifications it found. The session acts
on those after the drain (scanning, attaching, resuming the process), so
nothing a drain does ever calls back into discovery or attaching.

Under overload no more spans are built than the export queue has room for:
the rest would be dropped anyway, after costing CPU and memory. They are
counted (queue_full) instead; load notifications are never shed (each one
resumes a stopped process), nor names (the HTTP span metrics' labels).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List, Optional

from ..assemble import BadPayload, SpanBuilder
from ..assemble.telemetry import EncodedSpan
from ..decode import Bindings, LoadRecord, NameRecord, OtelSpanRecord, PointRecord, SpanRecord
from ..export import ExportPipeline
from ..kernel import RingBuffer
from ..kernel.layout import KIND_LOAD, KIND_NAME, KIND_POINT, KIND_SPAN
from .stats import Stats

log = logging.getLogger("spanprobe.tracer")


class Drainer:
    """The ring buffer -> pipeline stage of one session, drained every ``interval`` seconds."""

    def __init__(self, ring: RingBuffer, bindings: Bindings, builder: SpanBuilder, pipeline: ExportPipeline,
                 stats: Stats, interval: float, on_read: Optional[Callable[[int], None]] = None,
                 names: Optional[Dict[int, str]] = None):
        self.ring = ring
        self.bindings = bindings
        self.builder = builder
        self.pipeline = pipeline
        self.stats = stats
        self.interval = interval
        #: Told the bytes of span and point records each read took out of the ring buffer (the adaptive
        #: sampler's admission control: kernel.sampling).
        self.on_read = on_read
        #: The texts of the HTTP method and route hashes the kernel sent (kernel.metrics), by hash.
        self.names: Dict[int, str] = {} if names is None else names
        self._next = 0.0

    def drain(self, wait: bool = True) -> List[LoadRecord]:
        """Collect every record in the ring buffer and turn it into spans; the load notifications found.

        With ``wait``, first sleeps until ``interval`` after the previous timed
        drain began (dlopen notifications wake it early): a drain that took
        long is followed at once by the next, so a busy tracer never idles
        while records pile up.
        """
        if wait:
            remaining = self._next - time.monotonic()
            if remaining > 0.001:
                self.ring.wait(remaining)
            self._next = max(self._next + self.interval, time.monotonic())
        raw = self.ring.read()
        if raw and self.on_read is not None:
            self.on_read(sum(len(rec) for rec in raw if rec[0] in (KIND_SPAN, KIND_POINT)))
        return self.process(raw) if raw else []

    def process(self, raw: List[bytes]) -> List[LoadRecord]:
        """Decode and build ``raw`` records, submit the spans; the load notifications among them."""
        decode = self.bindings.decode
        builder = self.builder
        out = []
        loads = []
        spans_received = points_received = errors = shed = shed_points = bad_payloads = 0
        room = self.pipeline.max_queue - self.pipeline.queued
        for rec in raw:
            # rec[0]: the record's kind (a u16, little-endian); loads and names are never shed
            if len(out) >= room and rec[0] not in (KIND_LOAD, KIND_NAME):
                if rec[0] == KIND_POINT and not self.bindings.is_otel_span(rec):
                    shed_points += 1
                else:
                    shed += 1
                continue
            try:
                item = decode(rec)
            except Exception as exc:  # a decoder bug must not stop the session
                errors += 1
                log.debug("undecodable record: %s", exc)
                continue
            if item.__class__ is EncodedSpan:   # a span record the bindings' span_path encoded already
                spans_received += 1
                out.append(item)
            elif isinstance(item, SpanRecord):
                spans_received += 1
                out.append(builder.span(item))
            elif isinstance(item, PointRecord):
                points_received += 1
                builder.point(item)
            elif isinstance(item, OtelSpanRecord):
                spans_received += 1
                try:
                    out.append(builder.otel_span(item))
                except BadPayload as exc:
                    bad_payloads += 1
                    log.debug("otel_span payload of pid %d dropped: %s", item.pid, exc)
            elif isinstance(item, LoadRecord):
                loads.append(item)
            elif isinstance(item, NameRecord):
                self.names[item.hash] = item.text
            else:
                errors += 1
        self.stats.spans_received += spans_received
        self.stats.points_received += points_received
        self.stats.decode_errors += errors
        if shed:
            self.stats.drop("queue_full", shed)
        if shed_points:
            self.stats.drop_events("queue_full", shed_points)
        if bad_payloads:
            self.stats.drop("bad_payload", bad_payloads)
        out.extend(builder.take_events())
        self.pipeline.submit(out)
        return loads
