"""The adaptive sampler's control law: lower the kernel's ratio under overload, raise it back when it passes.

Run every housekeeping tick (``dt`` about 0.5 s) with the kernel's counters and
the export queue. Over the tick:

* ``kept``: spans that passed the sampler (submitted, or lost to a full ring buffer);
* ``lost``: spans lost to overload (ring buffer full, export queue full);
* ``exported``: spans the exporter took, i.e. what the tracer can deliver now.

Overloaded (anything lost, or the export queue over a quarter full, where the
session stops draining): the ratio becomes ``ratio * 0.7 * exported / kept``
(the share the tracer delivered, with a margin for the backlog to drain), and
never less than a tenth of what it was in one tick. Otherwise, while the queue
is under 5 % full, it grows by a quarter a tick up to 1. With a ceiling
(``--sampler-arg SPANS_PER_S``), the ratio is also held where the kept rate,
scaled by the new ratio, stays under it. Between MIN_RATIO and 1.

Since each trace's decision is taken once, at its first span's start, and
remembered until that span ends (kernel.sampling), a change of ratio never
splits a trace: fewer whole traces reach the collector, not fragments.
"""

from __future__ import annotations

from typing import Dict

from ..kernel import Counter

#: The lowest ratio the controller sets (one trace in 4096).
MIN_RATIO = 1.0 / 4096


class AdaptiveRatio:
    def __init__(self, bound, max_rate: float = 0.0):
        self.bound = bound              # kernel.sampling.SamplingBound
        self.max_rate = max_rate
        self.ratio = 1.0
        self._last = None               # (kept, lost, exported) at the previous tick
        bound.set(self.ratio)

    def update(self, kernel: Dict[Counter, int], queue_full: int, exported: int, queue_fill: float,
               dt: float) -> float:
        """One tick: the counters now (cumulative), the queue's fill (0..1), seconds since the last tick."""
        now = (kernel[Counter.SPANS] + kernel[Counter.SPAN_RB_FULL] + kernel[Counter.SPAN_RESERVE_FAILED],
               kernel[Counter.SPAN_RB_FULL] + queue_full,
               exported)
        if self._last is None or dt <= 0:
            self._last = now
            return self.ratio
        kept, lost, delivered = (a - b for a, b in zip(now, self._last))
        self._last = now
        ratio = self.ratio
        if lost > 0 or queue_fill > 0.25:
            ratio *= max(0.1, min(1.0, 0.7 * delivered / kept) if kept > 0 else 0.5)
        elif queue_fill < 0.05:
            ratio = min(1.0, ratio * 1.25)
        if self.max_rate and kept > 0:
            ratio = min(ratio, self.ratio * self.max_rate * dt / kept)
        ratio = min(1.0, max(MIN_RATIO, ratio))
        if ratio != self.ratio:
            self.ratio = ratio
            self.bound.set(ratio)
        return ratio
