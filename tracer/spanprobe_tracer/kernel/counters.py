"""The kernel's counters: what the BPF handlers count (kept, dropped and why), summed over CPUs.

Every handler bumps a slot of the core module's per-CPU array sp_counters
(SP_CNT_*, rendered from Counter): spans and points submitted, starts stored,
every drop by its reason (ring buffer full; a reserve that failed with room to
spare, in the rescue ring buffer as well; open-span map full; an end without its
start; a one-hit span probe's payload unreadable, or its handler's scratch held
by a preempted hit; a span under the duration threshold), spans sampled out, span metrics
that found no room, and the records the rescue ring buffer took. The session
reads them into its accounting (session.stats).
"""

from __future__ import annotations

import enum
from typing import Dict


class Counter(enum.IntEnum):
    """Slots of the per-CPU counter array; the C's SP_CNT_<NAME> are rendered from these."""

    STARTS = 0              # span starts stored in the open-span map
    START_MAP_FULL = 1      # span starts dropped: open-span map full
    END_WITHOUT_START = 2   # span ends with no stored start
    FILTERED = 3            # spans shorter than the threshold (not a loss)
    SPAN_RB_FULL = 4        # finished spans dropped: ring buffer full
    SPANS = 5               # finished spans submitted
    POINT_RB_FULL = 6       # events/plain probe hits dropped: ring buffer full
    POINTS = 7              # events/plain probe hits submitted
    LOADS = 8               # provider-looking dlopen()s that stopped a process
    LOAD_RB_FULL = 9        # ...whose notification found no ring-buffer record (the process was not stopped)
    SAMPLED_OUT = 10        # finished spans the sampler dropped (not a loss: kernel.sampling)
    METRICS_MAP_FULL = 11   # span ends missing from the span metrics: their series map was full
    POINT_SAMPLED_OUT = 12  # events the sampler dropped with their trace (not a loss)
    NAME_RB_FULL = 13       # HTTP method/route names not sent yet: no ring-buffer record (sent with a later span)
    BAD_SPAN_PAYLOAD = 14   # one-hit span probe hits whose payload could not be read or had the wrong size
    SPAN_RESERVE_FAILED = 15    # finished spans dropped: reserve failed, the ring buffer had room (bpf/common.h)
    POINT_RESERVE_FAILED = 16   # events/plain probe hits dropped: the same
    RESCUED = 17            # records the rescue ring buffer took when a reserve in the shared one failed
    ONE_HIT_BUSY = 18       # one-hit span probe hits dropped: a preempted handler held their CPU's scratch


#: Slots in the array (room for more counters without changing its size).
NCOUNTERS = 24


class KernelCounters:
    """The counters of one core module (a bcc BPF object)."""

    def __init__(self, core):
        self._table = core.get_table("sp_counters")

    def read(self) -> Dict[Counter, int]:
        """Every counter, summed over CPUs."""
        return {c: sum(self._table[self._table.Key(int(c))]) for c in Counter}
