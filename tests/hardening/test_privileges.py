"""The tracer without the privileges it needs names exactly the missing ones and exits with status 5.

tests/tracer/test_cli.py::test_missing_privileges covers an unprivileged user
with no capabilities at all (and `doctor`); here, partial sets: a user
given only some capabilities, and root in a container without some.
"""

from __future__ import annotations

import subprocess

import pytest

from spanprobe_tracer.errors import ExitStatus
from spanprobe_tracer.kernel.privileges import REQUIRED
from tests.support.tracer_helpers import setpriv, spanprobe_cmd


@pytest.mark.parametrize("privileges, missing", [
    (["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=+bpf,+perfmon",
      "--ambient-caps=+bpf,+perfmon"], {"CAP_SYS_ADMIN", "CAP_SYS_PTRACE"}),
    (["--bounding-set=-sys_admin", "--inh-caps=-sys_admin"], {"CAP_SYS_ADMIN"}),
    (["--bounding-set=-sys_admin,-bpf", "--inh-caps=-sys_admin,-bpf"], {"CAP_SYS_ADMIN", "CAP_BPF"}),
], ids=["user-with-bpf-and-perfmon", "root-without-sys_admin", "root-without-sys_admin-and-bpf"])
def test_partial_privileges_name_exactly_what_is_missing(privileges, missing):
    r = subprocess.run(setpriv(*privileges) + spanprobe_cmd("trace", "--all"), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == ExitStatus.PERMISSION, r.stderr
    assert {text.split()[0] for text in REQUIRED.values() if text in r.stderr} == missing, r.stderr
