"""Attaching a BPF program to one probe site in one process, semaphore included.

bcc's Python ``attach_uprobe`` has no way to pass the kernel's uprobe
reference counter (``ref_ctr_offset``), and bcc's USDT support compiles one
program per process. spanprobe compiles a program once per provider layout
and attaches it to each process itself, through the same interface bcc uses
underneath: ``perf_event_open`` on the ``uprobe`` PMU, then
``PERF_EVENT_IOC_SET_BPF``.

With ``ref_ctr_offset`` the kernel increments the probe's semaphore in every
process it places the uprobe in and decrements it when the perf event is
closed, including when the tracer dies: a crashed tracer never leaves an
application paying for probes nobody reads.

The ``pid`` argument restricts the uprobe to that process's address space
(all of its threads). Closing the returned descriptor detaches.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from functools import lru_cache

_PMU_DIR = "/sys/bus/event_source/devices/uprobe"
_SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}
_PERF_EVENT_IOC_ENABLE = 0x2400
_PERF_EVENT_IOC_SET_BPF = 0x40042408
_PERF_FLAG_FD_CLOEXEC = 8
_ATTR_SIZE = 136  # PERF_ATTR_SIZE_VER8; the kernel accepts any known size


class AttachError(OSError):
    """The kernel refused the uprobe; the message says what to check."""


@lru_cache(maxsize=None)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


@lru_cache(maxsize=None)
def pmu_type() -> int:
    try:
        with open(_PMU_DIR + "/type") as f:
            return int(f.read())
    except OSError as exc:
        raise AttachError(exc.errno or errno.ENOENT,
                          "the kernel has no uprobe PMU (%s): it needs CONFIG_UPROBE_EVENTS" % _PMU_DIR) from None


@lru_cache(maxsize=None)
def ref_ctr_shift() -> int:
    """Bit position of ref_ctr_offset in perf_event_attr.config (config:32-63 today)."""
    try:
        with open(_PMU_DIR + "/format/ref_ctr_offset") as f:
            spec = f.read().strip()
    except OSError:
        raise AttachError(errno.ENOTSUP, "this kernel's uprobes have no reference counters "
                          "(USDT semaphores need Linux 4.20 or later)") from None
    return int(spec.split(":")[1].split("-")[0])


def attach(path: str, offset: int, ref_ctr_offset: int, pid: int, prog_fd: int) -> int:
    """Place a uprobe at file ``offset`` of ``path`` in process ``pid`` running ``prog_fd``.

    ``ref_ctr_offset`` is the file offset of the probe's semaphore (0: none).
    Returns the perf event descriptor; close it to detach.
    """
    machine = platform.machine()
    nr = _SYS_PERF_EVENT_OPEN.get(machine)
    if nr is None:
        raise AttachError(errno.ENOTSUP, "perf_event_open syscall number unknown for %s" % machine)
    config = ref_ctr_offset << ref_ctr_shift() if ref_ctr_offset else 0
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    path_buf = ctypes.create_string_buffer(os.fsencode(path))
    # type, size, config, sample_period (1: bcc does the same), then flags with
    # bit 0 "disabled": the program goes in before the probe can fire.
    struct.pack_into("<IIQQ", attr, 0, pmu_type(), _ATTR_SIZE, config, 1)
    struct.pack_into("<Q", attr, 40, 1)
    struct.pack_into("<QQ", attr, 56, ctypes.addressof(path_buf), offset)
    libc = _libc()
    fd = libc.syscall(nr, attr, pid, -1, -1, _PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        hint = {
            errno.EACCES: "run as root (or with CAP_PERFMON and CAP_BPF)",
            errno.EPERM: "run as root (or with CAP_PERFMON and CAP_BPF)",
            errno.ESRCH: "the process exited",
            errno.ENOENT: "the file is gone",
            errno.EINVAL: "offset or semaphore rejected (another tracer attached to this probe "
                          "with a different semaphore offset?)",
        }.get(err, "")
        raise AttachError(err, "perf_event_open(uprobe %s+%#x, pid %d): %s%s"
                          % (path, offset, pid, os.strerror(err), "; " + hint if hint else ""))
    try:
        if libc.ioctl(fd, _PERF_EVENT_IOC_SET_BPF, prog_fd) != 0:
            err = ctypes.get_errno()
            raise AttachError(err, "attaching the BPF program to uprobe %s+%#x: %s"
                              % (path, offset, os.strerror(err)))
        if libc.ioctl(fd, _PERF_EVENT_IOC_ENABLE, 0) != 0:
            err = ctypes.get_errno()
            raise AttachError(err, "enabling uprobe %s+%#x: %s" % (path, offset, os.strerror(err)))
    except BaseException:
        os.close(fd)
        raise
    return fd
