"""The core module's ring buffer, read in bounded batches.

Every handler submits its record with BPF_RB_NO_WAKEUP (a wakeup per event
would cost the traced application ~1.4 µs a probe hit), so the tracer polls
on a timer; only dlopen() notifications wake it early. ``read`` consumes
what is there and hands the records over as bytes.

libbpf keeps consuming while producers keep adding: against producers faster
than the tracer, one consume would never end and the records held would grow
without bound. So the record callback stops it once a ring buffer's worth is
held (a negative return; libbpf has already moved past that record, which is
kept), and the next read takes the rest.
"""

from __future__ import annotations

import ctypes
from typing import List


class RingBuffer:
    """The ring buffer sp_events of ``core`` (a bcc BPF object); at most ``cap_bytes`` a read."""

    def __init__(self, core, cap_bytes: int):
        self._core = core
        self._cap = cap_bytes
        self._held: List[bytes] = []
        self._held_bytes = 0
        self._string_at = ctypes.string_at
        # Held: the table keeps bcc's C callback wrapping on_record alive (freed, it would crash).
        self._table = core.get_table("sp_events")
        self._table.open_ring_buffer(self.on_record)

    def on_record(self, _ctx, data, size) -> int:
        """bcc's callback for one record: keep its bytes; -1 (stop consuming) once the cap is held."""
        self._held.append(self._string_at(data, size))
        self._held_bytes += size
        return -1 if self._held_bytes >= self._cap else 0

    def wait(self, timeout_s: float) -> None:
        """Sleep until ``timeout_s`` has passed or a record that wakes the reader arrives (records
        that arrived meanwhile are held for ``read``)."""
        self._core.ring_buffer_poll(int(timeout_s * 1000))

    def read(self) -> List[bytes]:
        """Every record held or there now (up to the cap), oldest first."""
        self._core.ring_buffer_consume()
        held, self._held = self._held, []
        self._held_bytes = 0
        return held
