"""Test-wide plumbing: BPF availability for tests that attach real probes.

Mark such tests ``@pytest.mark.bpf`` (or request the ``require_bpf`` fixture, or
call ``require_bpf()`` from a test or fixture). When a prerequisite is missing the
test is skipped, except when ``SPANPROBE_REQUIRE_BPF=1`` (scripts/test.sh and CI):
then it fails, naming exactly what is missing, so CI can never go green by quietly
skipping every tracer test. The same holds for every other prerequisite a test
skips on (root, setpriv, bpftrace, what the kernel reports): under
``SPANPROBE_REQUIRE_BPF=1`` any skip is turned into a failure that quotes it.

bcc is imported lazily and only here: the SDK matrix venvs (.venvs/py3.X, pyenv
Pythons) have no bcc, and this file is loaded there too. In those runs
(``SPANPROBE_SDK_MATRIX=1``) BPF tests are skipped without even trying.
"""

from __future__ import annotations

import functools
import os
from typing import Optional

import pytest

REQUIRE_ENV = "SPANPROBE_REQUIRE_BPF"
SDK_MATRIX_ENV = "SPANPROBE_SDK_MATRIX"

_TRACEFS_MOUNTPOINTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

# Smallest program that still goes through clang (needs kernel headers: bcc always
# includes them) and the kernel verifier (needs root/CAP_BPF).
_SELFTEST_SRC = b"int spanprobe_selftest(void *ctx) { return 0; }\n"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _tracefs_mounted() -> bool:
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) >= 3 and fields[2] == "tracefs" and fields[1] in _TRACEFS_MOUNTPOINTS:
                    return True
    except OSError:
        pass
    return False


def _headers_note() -> str:
    build = "/lib/modules/%s/build" % os.uname().release
    if os.path.isdir(build):
        return "%s -> %s" % (build, os.path.realpath(build))
    return "%s does not resolve to a directory (scripts/setup.sh links Debian's linux-headers)" % build


@functools.lru_cache(maxsize=None)
def bpf_problem() -> Optional[str]:
    """Return the first missing BPF prerequisite, or None if BPF works.

    Checked once per session (process): compiling with bcc takes about a second.
    """
    if os.geteuid() != 0:
        return "not running as root (euid %d): loading BPF programs needs root" % os.geteuid()
    try:
        import bcc  # noqa: F401  (lazy on purpose, see module docstring)
    except Exception as exc:  # ImportError, or OSError when libbcc.so is missing
        return ("bcc Python module not importable (%s: %s): it comes from Debian's python3-bpfcc "
                "and is visible only to /usr/bin/python3 and .venv made by scripts/setup.sh"
                % (type(exc).__name__, exc))
    if not _tracefs_mounted():
        return ("tracefs not mounted at /sys/kernel/tracing "
                "(mount -t tracefs nodev /sys/kernel/tracing, or run scripts/setup.sh)")
    try:
        prog = bcc.BPF(text=_SELFTEST_SRC)
        try:
            prog.load_func(b"spanprobe_selftest", bcc.BPF.KPROBE)
        finally:
            prog.cleanup()
    except Exception as exc:
        return ("bcc cannot compile and load a trivial BPF program (%s: %s); kernel headers: %s"
                % (type(exc).__name__, exc, _headers_note()))
    return None


def require_bpf() -> None:
    """Skip the current test if BPF is unusable, or fail it under SPANPROBE_REQUIRE_BPF=1."""
    if _env_flag(SDK_MATRIX_ENV) and not _env_flag(REQUIRE_ENV):
        pytest.skip("BPF test skipped in the SDK matrix run (no bcc in this venv)")
    problem = bpf_problem()
    if problem is None:
        return
    if _env_flag(REQUIRE_ENV):
        pytest.fail("BPF prerequisite missing (%s=1): %s" % (REQUIRE_ENV, problem), pytrace=False)
    pytest.skip("BPF unavailable: %s" % problem)


@pytest.fixture(name="require_bpf")
def _require_bpf_fixture() -> None:
    """Fixture form of require_bpf(), for usefixtures() or as a dependency of other fixtures."""
    require_bpf()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("bpf") is not None:
        require_bpf()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call) -> None:
    """Under SPANPROBE_REQUIRE_BPF=1 (the full run of scripts/test.sh, CI) a skip is a failure.

    That run is on the machine scripts/setup.sh prepared, where every test can
    run: a skip there means a prerequisite went missing, and a green run that
    skipped would hide it.
    """
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _env_flag(REQUIRE_ENV) and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = "skipped under %s=1, where every prerequisite must be present: %s" % (REQUIRE_ENV, reason)
