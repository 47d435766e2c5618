"""`spanprobe doctor`: can this machine trace? Every prerequisite, and how to fix each one.

Checks go from the most basic to the end-to-end one (compile and load a real
provider module), so the first failure is usually the one to fix. Exit status
is 0 when all pass, else that of the first failure's kind (permission or BPF).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import List, Optional

from ..kernel import features
from ..kernel.features import Check
from ..text import format_duration


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="skip the end-to-end check (compile, attach, fire)")


def check_end_to_end() -> Check:
    """Everything at once: compile, attach to a provider in this process, fire, read the record."""
    from ..decode import Bindings, PointRecord, plan_decoders
    from ..discover import Scanner
    from ..kernel import CaptureConfig, ModuleCache, ProviderPlan, RingBuffer
    from ..session import attach_provider
    from .selftest import sample_provider

    provider = modules = attachment = None
    try:
        config = CaptureConfig(ringbuf_bytes=1 << 18)  # room for the timed fires below
        modules = ModuleCache(config)
        provider = sample_provider("spanprobe_doctor").load()
        if not provider.usdt_active:
            raise RuntimeError("the SDK could not load a provider here (it fell back to no-op probes)")
        inst = next((i for i in Scanner().scan(os.getpid()).providers if i.image.provider == "spanprobe_doctor"),
                    None)
        if inst is None:
            raise RuntimeError("the loaded sample provider is not visible in /proc/self/maps")
        sample = ProviderPlan(inst.image, config)
        module = modules.module_for(sample.layout)
        bindings = Bindings()
        ring = RingBuffer(modules.core, config.ringbuf_bytes)
        attachment = attach_provider(inst, sample, module, bindings, plan_decoders(sample))
        probe = provider.probes["tick"]
        if not probe.enabled:
            raise RuntimeError("attached, but the probe's semaphore is still 0 (uprobe ref_ctr not working)")
        probe.fire(4242)
        got = [bindings.decode(record) for record in ring.read()]
        if len(got) != 1 or not isinstance(got[0], PointRecord) or got[0].attributes.get("n") != 4242:
            raise RuntimeError("fired a probe but read back %r" % (got,))
        n = len(module.prog_fds)
        traced_ns = _fire_cost_ns(probe.fire)
        attachment.close()
        untraced_ns = _fire_cost_ns(probe.fire)
        call_ns = _fire_cost_ns(_empty)
    except Exception as exc:
        return Check("end-to-end probe", False, "%s: %s" % (type(exc).__name__, exc),
                     "fix the failures above first; otherwise bcc's compile errors are printed above")
    finally:
        if attachment is not None:
            attachment.close()
        if provider is not None and provider.loaded:
            provider.unload()
        if modules is not None:
            modules.close()
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


def run_checks(quick: bool = False) -> List[Check]:
    results = [check() for check in features.CHECKS]
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
    if len(results) == len(features.CHECKS) and not args.quick:
        print("\n(end-to-end check skipped until the failures above are fixed)")
    return int(failed.status)
