"""Kernel timestamps (CLOCK_BOOTTIME) to wall-clock nanoseconds since the epoch.

Probes are stamped in the kernel with bpf_ktime_get_boot_ns(): monotonic, and
still counting across suspend. OpenTelemetry wants epoch time. The offset
between the two is measured here by reading BOOTTIME, REALTIME, BOOTTIME in a
row and taking the pair with the tightest bracket; it is re-measured every few
seconds so that NTP slewing and clock steps show up in later spans (a span
keeps the offset in force when its end is decoded, so its duration is exact).
"""

from __future__ import annotations

import time

REANCHOR_SECONDS = 5.0


def measure_offset(samples: int = 5) -> int:
    """REALTIME - BOOTTIME in nanoseconds, from the tightest of ``samples`` brackets."""
    best = None
    for _ in range(samples):
        b0 = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        r = time.time_ns()
        b1 = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        width = b1 - b0
        if best is None or width < best[0]:
            best = (width, r - (b0 + b1) // 2)
    assert best is not None
    return best[1]


class WallClock:
    """Converts boot-time nanoseconds to epoch nanoseconds."""

    def __init__(self):
        self.offset = measure_offset()
        self._next = time.monotonic() + REANCHOR_SECONDS

    def maybe_reanchor(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self.offset = measure_offset()
            self._next = now + REANCHOR_SECONDS

    def to_wall(self, boot_ns: int) -> int:
        return boot_ns + self.offset
