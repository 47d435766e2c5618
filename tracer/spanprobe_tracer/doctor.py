"""`spanprobe doctor`: can this machine trace? Every prerequisite, and how to fix each one.

Checks go from the most basic to the end-to-end one (compile and load a real
provider module), so the first failure is usually the one to fix. Exit status
is 0 when all pass, else that of the first failure's kind (permission or BPF).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import platform
import struct
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

from . import privileges
from .errors import ExitStatus
from .exporters import format_duration
from .uprobe import SYS_BPF

BPF_MAP_CREATE = 0
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_RINGBUF = 27
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    status: ExitStatus = ExitStatus.BPF_UNAVAILABLE


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="skip the end-to-end check (compile, attach, fire)")


def _bpf_map_create(map_type: int, key_size: int, value_size: int, max_entries: int) -> int:
    nr = SYS_BPF.get(platform.machine())
    if nr is None:
        return -errno.ENOSYS
    attr = ctypes.create_string_buffer(struct.pack("<IIII", map_type, key_size, value_size, max_entries), 128)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(nr, BPF_MAP_CREATE, attr, 128)
    if fd < 0:
        return -ctypes.get_errno()
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
    rc = _bpf_map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 1)
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
    rc = _bpf_map_create(BPF_MAP_TYPE_RINGBUF, 0, 0, 4096)
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
    base = "/sys/bus/event_source/devices/uprobe"
    if not os.path.exists(base + "/type"):
        return Check("uprobes", False, "no uprobe PMU at %s" % base,
                     "use a kernel with CONFIG_UPROBE_EVENTS=y")
    if not os.path.exists(base + "/format/ref_ctr_offset"):
        return Check("uprobes", False, "no uprobe reference counters",
                     "USDT semaphores need Linux 4.20 or later")
    return Check("uprobes", True, "uprobe PMU with reference counters (USDT semaphores)")


def check_bcc() -> Check:
    try:
        import bcc  # noqa: F401
    except Exception as exc:
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


def check_end_to_end() -> Check:
    """Everything at once: compile, attach to a provider in this process, fire, read the record."""
    import ctypes as ct

    from .discovery import Scanner
    from .program import PointRecord, ProgramConfig, Programs, decoders_for
    from .selftest import sample_provider
    from . import uprobe

    provider = programs = None
    fds: List[int] = []
    try:
        programs = Programs(ProgramConfig(ringbuf_bytes=1 << 18))  # room for the timed fires below
        provider = sample_provider("spanprobe_doctor").load()
        if not provider.usdt_active:
            raise RuntimeError("the SDK could not load a provider here (it fell back to no-op probes)")
        inst = next((i for i in Scanner().scan(os.getpid()).providers if i.image.provider == "spanprobe_doctor"),
                    None)
        if inst is None:
            raise RuntimeError("the loaded sample provider is not visible in /proc/self/maps")
        plan = programs.plan_for(inst.image)
        module = programs.module_for(plan.module)
        tick = next(p for p in plan.points if p.probe.name == "tick")
        cookie = programs.bind(decoders_for(plan)[id(tick)], os.getpid())
        for loc in tick.probe.locations:
            fds.extend(uprobe.attach(inst.attach_path, loc.offset, loc.semaphore, os.getpid(),
                                     module.prog_fds[tick.shape.fn], cookie))
        probe = provider.probes["tick"]
        if not probe.enabled:
            raise RuntimeError("attached, but the probe's semaphore is still 0 (uprobe ref_ctr not working)")
        probe.fire(4242)
        got: List[object] = []
        programs.core["sp_events"].open_ring_buffer(
            lambda _c, data, size: got.append(programs.decode(ct.string_at(data, size))) or 0)
        programs.core.ring_buffer_consume()
        if len(got) != 1 or not isinstance(got[0], PointRecord) or got[0].attributes.get("n") != 4242:
            raise RuntimeError("fired a probe but read back %r" % (got,))
        n = len(module.prog_fds)
        traced_ns = _fire_cost_ns(probe.fire)
        for fd in fds:
            os.close(fd)
        fds = []
        untraced_ns = _fire_cost_ns(probe.fire)
        call_ns = _fire_cost_ns(_empty)
    except Exception as exc:
        return Check("end-to-end probe", False, "%s: %s" % (type(exc).__name__, exc),
                     "fix the failures above first; otherwise bcc's compile errors are printed above")
    finally:
        for fd in fds:
            os.close(fd)
        if provider is not None and provider.loaded:
            provider.unload()
        if programs is not None:
            programs.close()
    return Check("end-to-end probe", True, "compiled %d handlers, attached to a provider in this process, "
                 "fired a probe and read it back; here a probe hit costs %s while traced, and %s more "
                 "than an empty Python call untraced"
                 % (n, format_duration(traced_ns), format_duration(max(untraced_ns - call_ns, 0))))


def _empty(i):
    """The baseline of _fire_cost_ns: a Python call that does nothing."""


def _fire_cost_ns(fire, batches: int = 3, n: int = 1000) -> float:
    """What one fire() of a one-argument probe costs this process (best batch): the overhead
    figure a user of this machine can expect per probe, which varies several-fold between hosts
    (the kernel's trap is most of it when traced)."""
    best = float("inf")
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for i in range(n):
            fire(i)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


CHECKS: List[Callable[[], Check]] = [check_privileges, check_bpf_syscall, check_ringbuf, check_tracefs,
                                     check_uprobes, check_bcc, check_headers]


def run_checks(quick: bool = False) -> List[Check]:
    results = [check() for check in CHECKS]
    if not quick and all(r.ok for r in results):
        results.append(check_end_to_end())
    return results


def run(args: argparse.Namespace) -> int:
    results = run_checks(args.quick)
    for r in results:
        print("%-22s %s  %s" % (r.name, "ok  " if r.ok else "FAIL", r.detail))
        if not r.ok and r.fix:
            print("%-22s       fix: %s" % ("", r.fix))
    failed: Optional[Check] = next((r for r in results if not r.ok), None)
    if failed is None:
        print("\nthis machine can trace spanprobe providers")
        return 0
    if len(results) == len(CHECKS) and not args.quick:
        print("\n(end-to-end check skipped until the failures above are fixed)")
    return int(failed.status)
