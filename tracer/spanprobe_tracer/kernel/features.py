"""What this machine's kernel and toolchain offer for tracing, each check saying how to fix a failure.

One set of checks for everyone who asks: `spanprobe doctor` prints them (and
adds its end-to-end check), and the test suite (tests/conftest.py) decides
with them whether BPF tests can run, failing under SPANPROBE_REQUIRE_BPF=1
with the same message a user would see.

Only the standard library and spanprobe's own modules are imported at load
(bcc inside the checks that need it): the SDK-only test venvs import this too.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass
from typing import Callable, List, Optional

from ..errors import ExitStatus
from . import privileges
from .links import bpf_syscall

BPF_MAP_CREATE = 0
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_RINGBUF = 27
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
UPROBE_PMU = "/sys/bus/event_source/devices/uprobe"


@dataclass
class Check:
    """One prerequisite: whether it holds, what was found, and how to fix it if not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    status: ExitStatus = ExitStatus.BPF_UNAVAILABLE

    def problem(self) -> str:
        """The failure as one line: what is wrong, and what to do about it."""
        return "%s: %s%s" % (self.name, self.detail, "; fix: " + self.fix if self.fix else "")


def _map_create(map_type: int, key_size: int, value_size: int, max_entries: int) -> int:
    """0 if the kernel creates (and we close) such a BPF map, else -errno."""
    attr = ctypes.create_string_buffer(struct.pack("<IIII", map_type, key_size, value_size, max_entries), 128)
    fd = bpf_syscall(BPF_MAP_CREATE, attr)
    if fd < 0:
        return fd
    os.close(fd)
    return 0


def check_privileges() -> Check:
    problem = privileges.problem()
    if problem is None:
        return Check("privileges", True, "root" if os.geteuid() == 0 else "required capabilities present")
    return Check("privileges", False, "missing: " + "; ".join(privileges.missing()),
                 "run as root (sudo spanprobe ...) or grant CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE",
                 ExitStatus.PERMISSION)


def check_bpf_syscall() -> Check:
    rc = _map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 1)
    if rc == 0:
        return Check("bpf() syscall", True, "can create BPF maps")
    err = -rc
    fix = {
        errno.ENOSYS: "the kernel lacks CONFIG_BPF_SYSCALL; use a kernel built with BPF support",
        errno.EPERM: "run as root; in a container add --privileged (or CAP_BPF); check kernel lockdown "
                     "(/sys/kernel/security/lockdown) and seccomp",
    }.get(err, "see dmesg")
    return Check("bpf() syscall", False, os.strerror(err), fix,
                 ExitStatus.PERMISSION if err == errno.EPERM else ExitStatus.BPF_UNAVAILABLE)


def check_ringbuf() -> Check:
    rc = _map_create(BPF_MAP_TYPE_RINGBUF, 0, 0, 4096)
    if rc == 0:
        return Check("BPF ring buffer", True, "supported")
    if -rc == errno.EPERM:
        return Check("BPF ring buffer", False, "not permitted to check", "see the privileges check",
                     ExitStatus.PERMISSION)
    return Check("BPF ring buffer", False, os.strerror(-rc), "spanprobe needs Linux 5.8 or later (BPF ring buffers)")


def check_tracefs() -> Check:
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split() for line in f]
    except OSError as exc:
        return Check("tracefs", False, str(exc), "mount /proc")
    for fields in mounts:
        if len(fields) > 2 and fields[2] == "tracefs" and fields[1] in TRACEFS:
            return Check("tracefs", True, "mounted at %s" % fields[1])
    return Check("tracefs", False, "not mounted", "mount -t tracefs nodev /sys/kernel/tracing")


def check_uprobes() -> Check:
    if not os.path.exists(UPROBE_PMU + "/type"):
        return Check("uprobes", False, "no uprobe PMU at %s" % UPROBE_PMU,
                     "use a kernel with CONFIG_UPROBE_EVENTS=y")
    if not os.path.exists(UPROBE_PMU + "/format/ref_ctr_offset"):
        return Check("uprobes", False, "no uprobe reference counters",
                     "USDT semaphores need Linux 4.20 or later")
    return Check("uprobes", True, "uprobe PMU with reference counters (USDT semaphores)")


def check_bcc() -> Check:
    try:
        import bcc  # noqa: F401
    except Exception as exc:  # ImportError, or OSError when libbcc.so is missing
        return Check("bcc", False, "%s: %s" % (type(exc).__name__, exc),
                     "apt-get install python3-bpfcc bpfcc-tools, and run spanprobe with Debian's python3 "
                     "(or a venv created with --system-site-packages, as scripts/setup.sh does)")
    version = getattr(bcc, "__version__", "?")
    return Check("bcc", True, "bcc %s importable" % version)


def check_headers() -> Check:
    release = os.uname().release
    build = "/lib/modules/%s/build" % release
    if os.path.isdir(build) and os.path.exists(os.path.join(build, "include")):
        return Check("kernel headers", True, "%s -> %s" % (build, os.path.realpath(build)))
    if os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return Check("kernel headers", True, "from CONFIG_IKHEADERS (/sys/kernel/kheaders.tar.xz)")
    return Check("kernel headers", False, "%s does not exist and the kernel has no CONFIG_IKHEADERS" % build,
                 "apt-get install linux-headers-$(dpkg --print-architecture), then link "
                 "/lib/modules/%s/build to /usr/src/linux-headers-*-<arch> and .../source to "
                 "/usr/src/linux-headers-*-common (scripts/setup.sh does this)" % release)


#: The smallest program that still goes through clang (which needs the kernel headers: bcc
#: always includes them) and the kernel's verifier.
_TRIVIAL_PROGRAM = b"int spanprobe_selftest(void *ctx) { return 0; }\n"


def check_compile() -> Check:
    """bcc compiles and the kernel loads a trivial program (about a second: clang runs)."""
    try:
        import bcc
        prog = bcc.BPF(text=_TRIVIAL_PROGRAM)
        try:
            prog.load_func(b"spanprobe_selftest", bcc.BPF.KPROBE)
        finally:
            prog.cleanup()
    except Exception as exc:
        return Check("BPF compile", False, "bcc cannot compile and load a trivial program (%s: %s)"
                     % (type(exc).__name__, exc), "see the kernel headers check; `spanprobe doctor` says more")
    return Check("BPF compile", True, "bcc compiled and the kernel loaded a trivial program")


#: Everything tracing needs, most basic first: the first failure is usually the one to fix.
CHECKS: List[Callable[[], Check]] = [check_privileges, check_bpf_syscall, check_ringbuf, check_tracefs,
                                     check_uprobes, check_bcc, check_headers]


def first_failure(checks: List[Callable[[], Check]]) -> Optional[Check]:
    """The first of ``checks`` that fails (the rest are not run), or None."""
    for check in checks:
        result = check()
        if not result.ok:
            return result
    return None
