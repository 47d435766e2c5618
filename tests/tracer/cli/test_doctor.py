"""`spanprobe doctor` on a machine that can trace: every check passes, the end-to-end one
included, and it tells the user what a probe costs on this machine."""

from __future__ import annotations

import re

import pytest

from tests.support.tracer_helpers import run_spanprobe

pytestmark = pytest.mark.bpf


def test_doctor_passes_end_to_end_and_reports_what_a_probe_costs_here():
    r = run_spanprobe("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "this machine can trace spanprobe providers" in r.stdout
    assert "FAIL" not in r.stdout
    m = re.search(r"^end-to-end probe +ok +compiled \d+ handlers, .* fired a probe and read it back; "
                  r"here a probe hit costs ([\d.]+) (ns|µs|ms) while traced, and (\d+) ns more than an "
                  r"empty Python call untraced$", r.stdout, re.M)
    assert m, r.stdout
    traced_ns = float(m.group(1)) * {"ns": 1, "µs": 1e3, "ms": 1e6}[m.group(2)]
    # Not a timing target: the traced figure includes a kernel trap, so it must exceed the
    # untraced one by far, whatever the machine; a mix-up of the two would not.
    assert traced_ns > 4 * int(m.group(3)), r.stdout
