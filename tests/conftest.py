"""Test-wide plumbing: BPF availability for tests that attach real probes.

Mark such tests ``@pytest.mark.bpf`` (or request the ``require_bpf`` fixture, or
call ``require_bpf()`` from a test or fixture). When a prerequisite is missing the
test is skipped, except when ``SPANPROBE_REQUIRE_BPF=1`` (scripts/test.sh and CI):
then it fails, naming exactly what is missing, so CI can never go green by quietly
skipping every tracer test. The same holds for every other prerequisite a test
skips on (root, setpriv, bpftrace, what the kernel reports): under
``SPANPROBE_REQUIRE_BPF=1`` any skip is turned into a failure that quotes it.

What BPF needs is checked by the tracer's own feature checks
(spanprobe_tracer.kernel.features, what `spanprobe doctor` runs), imported
lazily: the SDK matrix venvs (.venvs/py3.X, pyenv Pythons) have no bcc, and
this file is loaded there too. In those runs (``SPANPROBE_SDK_MATRIX=1``) BPF
tests are skipped without even trying.
"""

from __future__ import annotations

import functools
import os
from typing import Optional

import pytest

REQUIRE_ENV = "SPANPROBE_REQUIRE_BPF"
SDK_MATRIX_ENV = "SPANPROBE_SDK_MATRIX"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


@functools.lru_cache(maxsize=None)
def bpf_problem() -> Optional[str]:
    """The first missing BPF prerequisite, as `spanprobe doctor` states it, or None if BPF works.

    The checks are the tracer's own (spanprobe_tracer.kernel.features), then a
    trivial compile and load; run once per session (process): compiling with
    bcc takes about a second.
    """
    from spanprobe_tracer.kernel import features  # lazy on purpose, see module docstring

    failed = features.first_failure(features.CHECKS + [features.check_compile])
    return failed.problem() if failed else None


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
