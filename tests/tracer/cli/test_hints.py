"""Zero spans never go unexplained (issue 14 item 5), with real BPF and a real gunicorn.

* `trace -- CMD` on an application that never loaded a provider says so at the end;
* `trace --pid` on a pre-fork master names the worker pids that hold providers;
* a ready line on stderr once attached, for --pid and for --all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.support import child_env
from tests.support.tracer_helpers import Tracer, run_spanprobe, spanprobe_cmd, wait_until

pytestmark = pytest.mark.bpf

HINT = "spanprobe: hint: nothing was traced"

WSGI_APP = textwrap.dedent('''
    import os
    import spanprobe

    provider = spanprobe.Provider("gunicorn_app")
    hit = provider.add_probe("hit", path=str)
    provider.load()
    open(os.path.join(os.environ["READY_DIR"], str(os.getpid())), "w").close()

    def application(environ, start_response):
        hit.fire(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
''')


def test_a_command_that_never_loads_a_provider_gets_a_hint():
    code = "import spanprobe\np = spanprobe.Provider('forgot')\np.add_probe('x', s=str)\nprint('ran')"
    r = run_spanprobe("trace", "--", sys.executable, "-c", code, timeout=120, env=child_env())
    assert r.returncode == 0 and r.stdout.strip() == "ran", r.stderr
    assert HINT + ": the command (pid " in r.stderr
    assert "never loaded a spanprobe provider. The application must call Provider.load()" in r.stderr
    assert "spanprobe-instrument" in r.stderr


def test_a_command_that_loads_one_gets_no_hint_and_a_ready_line():
    code = "import spanprobe\np = spanprobe.Provider('loads')\nx = p.add_probe('x', s=str)\np.load()\nx.fire('a')"
    r = run_spanprobe("trace", "--", sys.executable, "-c", code, timeout=120, env=child_env())
    assert r.returncode == 0, r.stderr
    assert HINT not in r.stderr
    assert "spanprobe: ready: tracing the command: 1 providers attached in 1 processes (1 probe sites)" \
        in r.stderr


@pytest.fixture(params=[False, True], ids=["workers-load", "preload"])
def gunicorn(request, tmp_path):
    """A gunicorn master and 2 workers; with preload, the master loads the provider too."""
    (tmp_path / "wsgi_probe_app.py").write_text(WSGI_APP)
    ready = tmp_path / "ready"
    ready.mkdir()
    env = dict(child_env(), READY_DIR=str(ready))
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", "127.0.0.1:0",
           *(["--preload"] if request.param else []), "wsgi_probe_app:application"]
    log = tmp_path / "gunicorn.log"
    master = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    loads = 1 if request.param else 2  # preloaded: the workers inherit the master's provider
    try:
        assert wait_until(lambda: len(workers_of(master.pid)) == 2 and len(os.listdir(ready)) == loads,
                          timeout=30), "gunicorn did not start:\n" + log.read_text()
        yield master.pid, sorted(workers_of(master.pid)), request.param
    finally:
        master.send_signal(signal.SIGTERM)
        try:
            master.wait(timeout=30)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()


def workers_of(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def test_pid_of_a_prefork_master_names_its_workers(gunicorn):
    master, workers, preload = gunicorn
    named = ", ".join(map(str, workers))
    suggestion = " ".join("--pid %d" % w for w in workers)
    if not preload:  # the master holds no provider: refused, naming the workers that do
        r = run_spanprobe("trace", "--pid", str(master), timeout=60)
        assert r.returncode == 4, r.stderr
        assert ("no spanprobe providers in pid %d, but its child processes %s have them" % (master, named)
                in r.stderr)
        assert "trace them with %s, or every process with --all" % suggestion in r.stderr
        return
    # the master holds one too: traced, with a warning that the workers are not
    tracer = Tracer("trace", "--pid", str(master), "--exporter", "jsonl")
    try:
        lines = stderr_until(tracer, "spanprobe: warning: child processes")
    finally:
        tracer.stop()
    assert "spanprobe: ready: tracing pid %d: 1 providers attached in 1 processes (1 probe sites)" % master \
        in lines
    assert ("child processes %s of pid %d hold spanprobe providers too and are not traced" % (named, master)
            in lines)
    assert "add %s, or trace every process with --all" % suggestion in lines


def test_all_says_when_it_is_ready(gunicorn):
    tracer = Tracer("trace", "--all", "--exporter", "jsonl")
    try:
        lines = stderr_until(tracer, "spanprobe: ready:")
    finally:
        tracer.stop()
    (ready,) = [line for line in lines.splitlines() if line.startswith("spanprobe: ready:")]
    assert ready.startswith("spanprobe: ready: tracing every process: ")
    attached = int(ready.split(": ")[3].split()[0])
    assert attached >= 2, "both workers' providers at least (and the master's, preloaded)"


def stderr_until(tracer, text, timeout=120.0):
    """Lines of the running tracer's stderr up to the first one containing ``text``."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = tracer.proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return "".join(lines)
    raise AssertionError("no %r on the tracer's stderr:\n%s" % (text, "".join(lines)))
