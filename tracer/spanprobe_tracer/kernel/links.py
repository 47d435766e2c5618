"""Attaching a BPF program to one probe site in one process, semaphore included.

bcc's Python ``attach_uprobe`` has no way to pass the kernel's uprobe
reference counter (``ref_ctr_offset``), and bcc's USDT support compiles one
program per process. spanprobe compiles a program once per argument shape
and attaches it to each process itself, through the interface bcc uses
underneath: ``perf_event_open`` on the ``uprobe`` PMU, then a BPF link.

With ``ref_ctr_offset`` the kernel increments the probe's semaphore in every
process it places the uprobe in and decrements it when the perf event is
closed, including when the tracer dies: a crashed tracer never leaves an
application paying for probes nobody reads.

The program is attached through a BPF link carrying a *cookie*
(``BPF_LINK_CREATE`` with ``BPF_PERF_EVENT``, Linux 5.15): handlers are shared
between every probe of the same argument shape, and the cookie, which the
handler copies into each record, tells the tracer which probe of which
provider fired.

The ``pid`` argument restricts the uprobe to that process's address space
(all of its threads). ``attach`` returns a UprobeLink, the object that holds
the perf event and the BPF link (as cilium/ebpf's link.Link does): closing it
detaches.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import struct
from functools import lru_cache

_PMU_DIR = "/sys/bus/event_source/devices/uprobe"
_SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}
_PERF_EVENT_IOC_ENABLE = 0x2400
_PERF_FLAG_FD_CLOEXEC = 8
_ATTR_SIZE = 136  # PERF_ATTR_SIZE_VER8; the kernel accepts any known size
_SYS_BPF = {"x86_64": 321, "aarch64": 280}  # bpf(2) by machine
_BPF_LINK_CREATE = 28
_BPF_PERF_EVENT = 41  # enum bpf_attach_type
_BPF_ATTR_SIZE = 64


class AttachError(OSError):
    """The kernel refused the uprobe; the message says what to check."""


class UprobeLink:
    """One uprobe placed in one process, running one BPF program. ``close()`` detaches it (and
    the kernel decrements the probe's semaphore); closing twice is harmless."""

    __slots__ = ("perf_fd", "link_fd")

    def __init__(self, perf_fd: int, link_fd: int):
        self.perf_fd = perf_fd
        self.link_fd = link_fd

    def close(self) -> None:
        for fd in (self.link_fd, self.perf_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.perf_fd = self.link_fd = -1


@lru_cache(maxsize=None)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def raise_fd_limit() -> None:
    """Lift the soft limit on open files to the hard one.

    Every attached probe site holds two descriptors (perf event, BPF link): at
    the common soft limit of 1024, --all on a host with a few dozen traced
    processes would run out. Commands the tracer launched before this keep
    the limit they were started with.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # the soft limit stays; attach() names EMFILE should it run out


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


def bpf_syscall(cmd: int, attr) -> int:
    """bpf(2) command ``cmd`` with ``attr`` (a ctypes buffer, its whole length passed): the
    result (a descriptor for the commands that make one), or -errno."""
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        return -errno.ENOSYS
    result = _libc().syscall(nr, cmd, attr, len(attr))
    return result if result >= 0 else -ctypes.get_errno()


def _link(prog_fd: int, perf_fd: int, cookie: int, where: str) -> int:
    """BPF_LINK_CREATE: run ``prog_fd`` on perf event ``perf_fd``, with ``cookie``."""
    attr = ctypes.create_string_buffer(_BPF_ATTR_SIZE)
    # link_create: prog_fd, target_fd, attach_type, flags, perf_event.bpf_cookie
    struct.pack_into("<IIIIQ", attr, 0, prog_fd, perf_fd, _BPF_PERF_EVENT, 0, cookie)
    fd = bpf_syscall(_BPF_LINK_CREATE, attr)
    if fd < 0:
        err = -fd
        hint = "; BPF cookies need Linux 5.15 or later" if err in (errno.EINVAL, errno.ENOTSUP) else ""
        raise AttachError(err, "linking the BPF program to %s: %s%s" % (where, os.strerror(err), hint))
    return fd


def attach(path: str, offset: int, ref_ctr_offset: int, pid: int, prog_fd: int, cookie: int = 0) -> UprobeLink:
    """Place a uprobe at file ``offset`` of ``path`` in process ``pid`` running ``prog_fd``.

    ``ref_ctr_offset`` is the file offset of the probe's semaphore (0: none);
    ``cookie`` is what bpf_get_attach_cookie() returns in the program.
    Raises AttachError, saying what to check.
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
            errno.EMFILE: "the tracer is out of file descriptors (two per probe site): raise its "
                          "hard limit (ulimit -Hn, LimitNOFILE=)",
        }.get(err, "")
        raise AttachError(err, "perf_event_open(uprobe %s+%#x, pid %d): %s%s"
                          % (path, offset, pid, os.strerror(err), "; " + hint if hint else ""))
    link = -1
    try:
        link = _link(prog_fd, fd, cookie, "uprobe %s+%#x" % (path, offset))
        if libc.ioctl(fd, _PERF_EVENT_IOC_ENABLE, 0) != 0:
            err = ctypes.get_errno()
            raise AttachError(err, "enabling uprobe %s+%#x: %s" % (path, offset, os.strerror(err)))
    except BaseException:
        if link >= 0:
            os.close(link)
        os.close(fd)
        raise
    return UprobeLink(fd, link)
