"""The SDK installed alone, as an application's virtualenv has it (issue 14 item 3).

A real virtualenv on a pyenv Python (no bcc, no tracer extra), with
`pip install` of this checkout: its `spanprobe` command must say in one line
what the tracer needs and exit 8, not die with a traceback.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from spanprobe_tracer.errors import ExitStatus

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PYENV_PYTHON = "/root/.pyenv/versions/3.12.1/bin/python"


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory):
    venv = tmp_path_factory.mktemp("sdk-only") / "venv"
    subprocess.run([PYENV_PYTHON, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", REPO], capture_output=True, text=True,
                         timeout=600)
    assert pip.returncode == 0, pip.stderr
    return venv


@pytest.mark.parametrize("args", [["doctor"], ["trace", "--pid", "1"], ["list"], ["--help"]])
def test_spanprobe_without_the_tracer_says_what_it_needs_in_one_line(sdk_venv, args):
    r = subprocess.run([str(sdk_venv / "bin" / "spanprobe"), *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == ExitStatus.NOT_INSTALLED == 8
    assert r.stdout == "" and "Traceback" not in r.stderr
    (line,) = r.stderr.splitlines()
    assert line.startswith("spanprobe: error: the tracer is not installed in this Python (missing: "
                           "opentelemetry-sdk, ")
    for need in ("python3-bpfcc", "spanprobe[tracer]", "--system-site-packages", "root"):
        assert need in line


def test_the_sdk_itself_works_there(sdk_venv):
    code = ("import spanprobe\np = spanprobe.Provider('alone')\nx = p.add_probe('x', s=str)\n"
            "p.load()\nx.fire('works')\np.unload()\nprint('ok')")
    r = subprocess.run([str(sdk_venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
