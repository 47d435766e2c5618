"""A probe's semaphore, read where the kernel writes it.

USDT semaphores are 16-bit counters in the provider object's writable
segment. A tracer attaching to a probe increments its semaphore (through the
kernel's uprobe reference counter, or by writing /proc/PID/mem) and
decrements it on detach. ``Semaphore`` is a ctypes view of that counter:
its truth test is ctypes' C-level "any byte non-zero", so ``if
probe.enabled:`` costs an attribute load and no Python frame, a few
nanoseconds, and it is always the live value.
"""

import ctypes


class Semaphore(ctypes.c_uint16):
    """Truthy while at least one tracer is attached; ``int()`` is the count."""

    __slots__ = ()

    def __int__(self):
        return self.value

    __index__ = __int__

    def __eq__(self, other):
        if isinstance(other, bool):
            return bool(self) is other
        if isinstance(other, int):
            return self.value == other
        return NotImplemented

    def __hash__(self):
        return hash(self.value)

    def __repr__(self):
        return f"<Semaphore {self.value}>"


def unattached():
    """A semaphore no tracer can reach: what a probe reads while not loaded."""
    return Semaphore(0)
