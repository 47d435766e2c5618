"""`spanprobe trace --ebpf`: the C the tracer would load for the providers it finds, printed, nothing loaded."""

from __future__ import annotations

import os
import sys

import pytest

from spanprobe_tracer.discover import Scanner
from spanprobe_tracer.errors import ExitStatus
from spanprobe_tracer.kernel import CaptureConfig, ProviderPlan, render_core, render_module
from tests.support.tracer_helpers import run_spanprobe

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="reads other processes' map_files: needs root")


def test_prints_the_core_and_each_module_it_would_load_and_attaches_nothing(tracee_factory):
    a, b = tracee_factory(), tracee_factory()
    a.send("load shop")
    b.send("load other")  # same argument shapes as shop: the same module
    r = run_spanprobe("trace", "--ebpf", "--string-size", "64", "--pid", str(a.pid), "--pid", str(b.pid))
    assert r.returncode == 0, r.stderr
    config = CaptureConfig(string_max=64)
    (inst,) = Scanner().scan(a.pid).providers
    layout = ProviderPlan(inst.image, config).layout
    assert r.stdout.startswith("/* spanprobe core module")
    assert render_core(config) in r.stdout
    assert render_module(layout, 1) in r.stdout
    assert "#define SP_STR_MAX 64" in r.stdout
    assert r.stdout.count("spanprobe module ") == 1
    assert "provider shop (pid %d), provider other (pid %d)" % (a.pid, b.pid) in r.stdout
    # Nothing was attached: no semaphore was ever raised.
    assert a.send("wait shop 0.5")["enabled"] is False


def test_a_command_is_refused():
    r = run_spanprobe("trace", "--ebpf", "--", sys.executable, "-c", "pass")
    assert r.returncode == ExitStatus.USAGE
    assert "--ebpf prints the modules for providers already loaded" in r.stderr


def test_no_providers_in_a_pid_is_the_usual_error(tracee):
    r = run_spanprobe("trace", "--ebpf", "--pid", str(tracee.pid))
    assert r.returncode == ExitStatus.NO_PROVIDERS, r.stderr
    assert r.stdout == ""
