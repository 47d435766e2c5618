"""The core module's ring buffers, read in bounded batches straight from their memory mappings.

Every handler submits its record with BPF_RB_NO_WAKEUP (a wakeup per event
would cost the traced application ~1.4 µs a probe hit), so the tracer polls
on a timer; only dlopen() notifications wake it early. ``read`` consumes
what is there and hands the records over as bytes.

Records are read from the map's mmap()ed pages, as libbpf's consumer does
(kernel/bpf/ringbuf.c's layout: a consumer-position page the reader writes, a
producer-position page, then the data pages mapped twice so a record that
wraps is contiguous; each record an 8-byte header, length with BUSY and
DISCARD bits, padded to 8 bytes), but without a C callback per record: bcc's
``ring_buffer_consume`` crossed from C into Python once a record, ~1.7 µs,
more than decoding it. Waiting is an epoll on the map's fd.

Against producers faster than the tracer one read is capped at a ring
buffer's worth of bytes; the next read takes the rest. A handler whose reserve
fails in the ring buffer tries a rescue ring (bpf/common.h): ``RingBuffer``
reads both.
"""

from __future__ import annotations

import mmap
import select
from typing import List

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HDR_SIZE = 8
_SIZE_MASK = ~(BUSY_BIT | DISCARD_BIT) & 0xFFFFFFFF


class RingReader:
    """The consumer's side of a BPF ring buffer of ``size`` bytes (a power of two).

    ``consumer`` is the writable consumer-position page, ``producer`` the
    producer-position page followed by the data twice over (the two mappings
    of a ring-buffer map fd); any buffers with that layout serve (tests).
    """

    def __init__(self, consumer, producer, size: int, page: int, cap_bytes: int):
        self._producer = producer
        self._mask = size - 1
        self._data = page
        self._cap = cap_bytes
        #: the producer pages as 32-bit words (native order: the kernel's), for the record headers
        self._words = memoryview(producer).cast("I")
        #: the two positions as native 64-bit words, each read or written in one access as the kernel
        #: does (struct's "<Q" goes a byte at a time: a reserve that read a consumer position half
        #: written saw the ring buffer full; docs/performance.md)
        self._consumer_pos = memoryview(consumer)[:8].cast("Q")
        self._producer_pos = memoryview(producer)[:8].cast("Q")

    def read(self) -> List[bytes]:
        """The records committed since the last read (up to the cap), oldest first."""
        prod = self._producer
        words = self._words
        cons = self._consumer_pos[0]
        end = self._producer_pos[0]
        limit = cons + self._cap
        mask, data = self._mask, self._data
        out = []
        append = out.append
        while cons < end and cons < limit:
            at = data + (cons & mask)
            length = words[at >> 2]     # the header's length word (records are 8-byte aligned)
            if length & BUSY_BIT:
                break  # still being written: the next read takes it (and what follows)
            size = length & _SIZE_MASK
            if not length & DISCARD_BIT:
                append(prod[at + HDR_SIZE:at + HDR_SIZE + size])
            cons += (size + HDR_SIZE + 7) & ~7
        self._consumer_pos[0] = cons
        return out


class RingBuffer:
    """The ring buffers of ``core`` (a bcc BPF object) read as one: sp_events, then its rescue ring
    sp_rescue; at most ``cap_bytes`` (or the ring's size) from each a read.

    Read in that order, a record seen in sp_events finds in the same read every
    record the rescue ring took before it was reserved (an event before the
    span it belongs to, a name before the span that uses it), unless the
    rescue ring's read stops at a record still being written.
    """

    RINGS = ("sp_events", "sp_rescue")

    def __init__(self, core, cap_bytes: int):
        page = mmap.PAGESIZE
        self._poll = select.epoll()
        self._maps = []
        self._readers = []
        for name in self.RINGS:
            table = core.get_table(name)
            fd, size = table.map_fd, table.max_entries
            consumer = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            producer = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
            self._maps += [consumer, producer]
            self._readers.append(RingReader(consumer, producer, size, page, min(cap_bytes, size)))
            self._poll.register(fd, select.EPOLLIN)

    def wait(self, timeout_s: float) -> None:
        """Sleep until ``timeout_s`` has passed or a record that wakes the reader arrives (records
        that arrived meanwhile wait for ``read``)."""
        self._poll.poll(timeout_s)

    def read(self) -> List[bytes]:
        """Every record there now (up to the caps): sp_events' oldest first, then the rescue ring's."""
        main, rescue = self._readers
        out = main.read()
        out += rescue.read()
        return out
