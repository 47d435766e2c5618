"""Loss accounting: every span is either exported or counted with the reason it was not.

Counts come from two places: the kernel (per-CPU counters the BPF programs
bump: ring buffer full, a reserve that failed with room, open-span map full, an end without its start, spans
under the duration threshold) and userspace (export queue full, export
failed, dropped at shutdown, open spans whose process exited). Spans the sampler dropped are
counted apart (sampled out): they are not lost. ``summary()``
is what the tracer prints on exit and, with --verbose, periodically.
"""

from __future__ import annotations

import threading
import time
from typing import Dict, List, Optional

from ..kernel import Counter


class Stats:
    """Userspace counters (thread-safe) plus the latest snapshot of the kernel's."""

    USER_DROPS = {
        "queue_full": "export queue full",
        "export_failed": "export failed",
        "shutdown": "still queued at shutdown",
        "rejected": "rejected by the collector",
        "bad_payload": "OpenTelemetry span payload cut or undecodable",
    }

    def __init__(self):
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.spans_received = 0      # spans built from span records
        self.points_received = 0     # event and plain probe records
        self.exported = 0            # spans the exporter accepted
        self.dropped: Dict[str, int] = {k: 0 for k in self.USER_DROPS}
        self.events_exported = 0     # OpenTelemetry events (log records) the exporter accepted
        self.events_dropped: Dict[str, int] = {k: 0 for k in self.USER_DROPS}
        self.unmatched_exited = 0    # open spans whose process exited
        self.unmatched_expired = 0   # open spans older than the open-span timeout
        self.open_at_exit = 0        # spans started but not ended when tracing stopped
        self.decode_errors = 0
        self.kernel: Dict[Counter, int] = {c: 0 for c in Counter}
        self.processes = 0
        self.probes = 0
        #: Span metrics exports that failed (the next one, cumulative, carries their numbers).
        self.metrics_exports_failed = 0
        #: OpenTelemetry API spans left out of the span metrics: too many series (session.span_metrics).
        self.metrics_api_series_full = 0
        #: The adaptive sampler's current ratio (None with any other sampler).
        self.sampler_ratio: Optional[float] = None
        self._rate_mark = (self.started, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def drop(self, reason: str, n: int) -> None:
        with self._lock:
            self.dropped[reason] += n

    def drop_events(self, reason: str, n: int) -> None:
        with self._lock:
            self.events_dropped[reason] += n

    def reject_events(self, n: int) -> None:
        """``n`` events of a batch counted as exported were refused by the collector (OTLP partial success)."""
        with self._lock:
            self.events_exported -= n
            self.events_dropped["rejected"] += n

    def reject(self, n: int) -> None:
        """``n`` spans of a batch counted as exported were refused by the collector (OTLP partial success)."""
        with self._lock:
            self.exported -= n
            self.dropped["rejected"] += n

    @property
    def lost(self) -> int:
        """Spans that finished in the application but were not exported."""
        k = self.kernel
        return (k[Counter.SPAN_RB_FULL] + k[Counter.POINT_RB_FULL] + k[Counter.SPAN_RESERVE_FAILED]
                + k[Counter.POINT_RESERVE_FAILED] + k[Counter.START_MAP_FULL] + k[Counter.BAD_SPAN_PAYLOAD]
                + k[Counter.ONE_HIT_BUSY]
                + sum(self.dropped.values()))

    def rate(self) -> float:
        """Exported spans per second since the previous call."""
        now = time.monotonic()
        with self._lock:
            then, count = self._rate_mark
            self._rate_mark = (now, self.exported)
        return (self.exported - count) / max(now - then, 1e-9)

    def status_line(self, rate: Optional[float] = None) -> str:
        rate = self.rate() if rate is None else rate
        return ("%d processes, %d probes, %.0f spans/s, %d exported, %d lost"
                % (self.processes, self.probes, rate, self.exported, self.lost))

    def as_dict(self) -> dict:
        """Everything counted, for --stats-file (benchmarks, supervisors)."""
        return {
            "elapsed_s": time.monotonic() - self.started,
            "spans_received": self.spans_received,
            "points_received": self.points_received,
            "exported": self.exported,
            "lost": self.lost,
            "dropped": dict(self.dropped),
            "events_exported": self.events_exported,
            "events_dropped": dict(self.events_dropped),
            "unmatched_exited": self.unmatched_exited,
            "unmatched_expired": self.unmatched_expired,
            "open_at_exit": self.open_at_exit,
            "decode_errors": self.decode_errors,
            "kernel": {c.name.lower(): v for c, v in self.kernel.items()},
            "sampled_out": self.kernel[Counter.SAMPLED_OUT],
            "metrics_exports_failed": self.metrics_exports_failed,
            "metrics_api_series_full": self.metrics_api_series_full,
            "sampler_ratio": self.sampler_ratio,
        }

    def summary(self) -> List[str]:
        k = self.kernel
        elapsed = time.monotonic() - self.started
        lines = [
            "%d spans and %d events/probe hits received, %d spans exported in %.1f s"
            % (self.spans_received, self.points_received, self.exported, elapsed),
            "lost: %d (ring buffer full: %d spans, %d events; ring-buffer reserve failed with room: %d spans, "
            "%d events; open-span map full: %d; unreadable one-hit span payload: %d; one-hit handler busy "
            "(preempted): %d; %s)"
            % (self.lost, k[Counter.SPAN_RB_FULL], k[Counter.POINT_RB_FULL], k[Counter.SPAN_RESERVE_FAILED],
               k[Counter.POINT_RESERVE_FAILED], k[Counter.START_MAP_FULL], k[Counter.BAD_SPAN_PAYLOAD],
               k[Counter.ONE_HIT_BUSY],
               ", ".join("%s: %d" % (label, self.dropped[key]) for key, label in self.USER_DROPS.items())),
            "events (probe hits and events outside a span, as OpenTelemetry events): %d exported, lost: %d (%s)"
            % (self.events_exported, sum(self.events_dropped.values()),
               ", ".join("%s: %d" % (label, self.events_dropped[key]) for key, label in self.USER_DROPS.items())),
            "incomplete: %d span ends without a recorded start (started before attach, or start dropped); "
            "%d starts never ended (%d process exited, %d timed out)"
            % (k[Counter.END_WITHOUT_START], self.unmatched_exited + self.unmatched_expired,
               self.unmatched_exited, self.unmatched_expired),
        ]
        if k[Counter.RESCUED]:
            lines.append("records the rescue ring buffer took (a reserve in the ring buffer failed; not lost): %d"
                         % k[Counter.RESCUED])
        if self.open_at_exit:
            lines.append("still open when tracing stopped (not lost; their end was not seen): %d"
                         % self.open_at_exit)
        if k[Counter.SAMPLED_OUT] or self.sampler_ratio is not None:
            lines.append("sampled out (whole traces, not lost): %d spans, %d events%s" % (
                k[Counter.SAMPLED_OUT], k[Counter.POINT_SAMPLED_OUT],
                "; adaptive ratio now %.4g" % self.sampler_ratio if self.sampler_ratio is not None else ""))
        if self.metrics_exports_failed:
            lines.append("span metrics exports failed: %d (each later export is cumulative: nothing is lost "
                         "unless the last one failed)" % self.metrics_exports_failed)
        if k[Counter.METRICS_MAP_FULL] or self.metrics_api_series_full:
            lines.append("span ends missing from the span metrics (series map full): %d, of them "
                         "OpenTelemetry API spans: %d" % (k[Counter.METRICS_MAP_FULL] + self.metrics_api_series_full,
                                                          self.metrics_api_series_full))
        if k[Counter.FILTERED]:
            lines.append("filtered (shorter than --min-duration): %d" % k[Counter.FILTERED])
        if self.decode_errors:
            lines.append("undecodable records: %d" % self.decode_errors)
        return lines
