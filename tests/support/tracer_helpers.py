"""Processes the tracer tests drive: tracee applications and the `spanprobe` command."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

from tests.support import poll_sites


def read_jsonl(path) -> list:
    """The complete lines of a JSON-lines file the tracer may still be writing (a last partial
    line, perhaps cut inside a UTF-8 character, waits for the next read)."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        complete = f.read().split(b"\n")[:-1]
    return [json.loads(line) for line in complete if line.strip()]


TRACEE = Path(__file__).resolve().parent / "tracee.py"
#: Probe sites of one tracee.make_provider() provider: four span probes, an event, a plain probe.
SITES = 6
#: The same provider with one-hit span probes (SPANPROBE_TRACEE_ONE_HIT=1) traced by them: two span
#: probes, an event, a plain probe.
ONE_HIT_SITES = 4


class SpanPath:
    """Tracees on one of the tracer's two span paths: "paired" (start and end probes only, paired in the
    kernel) or "one_hit" (spans also have the SDK's one-hit span probe, which the tracer then attaches
    alone, unless its sampler remembers trace decisions: kernel.plan.one_hit_allowed)."""

    def __init__(self, name: str, factory):
        self.name = name
        self.one_hit = name == "one_hit"
        self._factory = factory

    def tracee(self, **kw) -> "Tracee":
        env = dict({"SPANPROBE_TRACEE_ONE_HIT": "1"} if self.one_hit else {}, **kw.pop("env", {}))
        return self._factory(env=env, **kw)

    def traced_by_one_hit(self, *tracer_args: str) -> bool:
        """Does a tracer run with ``tracer_args`` trace these tracees' spans by their one-hit probes?"""
        from spanprobe_tracer.kernel.sampling import resolve_sampler
        flag = dict(zip(tracer_args, tracer_args[1:]))
        sampler = resolve_sampler(flag.get("--sampler"), flag.get("--sampler-arg"), env={})
        return self.one_hit and not sampler.stateful

    def sites(self, *tracer_args: str, spans: int = 2, others: int = 2) -> int:
        """Probe sites a tracer run with ``tracer_args`` attaches in one provider of ``spans`` spans and
        ``others`` event and plain probes (tracee.make_provider's by default; make_web_provider's: 1, 0)."""
        return spans * (1 if self.traced_by_one_hit(*tracer_args) else 2) + others


class Tracee:
    """tracee.py (or another ``script`` speaking its protocol) in a subprocess: send() a command
    line, get its JSON reply."""

    def __init__(self, env: Optional[dict] = None, script: Path = TRACEE):
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=full_env, text=True, bufsize=1)
        self.pid = self.read()["pid"]

    def read(self, timeout: float = 30.0) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("tracee did not answer within %.0f s" % timeout)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("tracee exited (status %s)" % self.proc.poll())
        return json.loads(line)

    def send(self, command: str, timeout: float = 30.0) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        reply = self.read(timeout)
        if not reply.get("ok"):
            raise AssertionError("tracee command %r failed: %r" % (command, reply))
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def spanprobe_cmd(*args: str) -> List[str]:
    return [sys.executable, "-m", "spanprobe_tracer.cli", *args]


class Tracer:
    """`spanprobe trace ...` running in the background."""

    def __init__(self, *args: str, env: Optional[dict] = None, preexec_fn=None):
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.args = args
        self.proc = subprocess.Popen(spanprobe_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=full_env, text=True, preexec_fn=preexec_fn)

    def stop(self, sig=signal.SIGINT, timeout: float = 30.0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 60.0):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError("spanprobe %s did not exit; stderr:\n%s" % (" ".join(self.args), err))
        self.stdout, self.stderr = out, err
        return self.proc.returncode

    def stopped(self) -> str:
        """Stop the tracer and say how it ended: for the message of a failed wait."""
        status = self.stop()
        return "tracer exit status %s, stderr:\n%s" % (status, self.stderr)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def jsonl_tracer(out, stats_file, *args: str, **kw) -> Tracer:
    """`spanprobe trace` to the JSON-lines file ``out``, accounting in ``stats_file``, for at most
    120 s; ``kw`` goes to Tracer (env, preexec_fn)."""
    return Tracer("trace", "--exporter", "jsonl", "--output", str(out), "--stats-file", str(stats_file),
                  "--duration", "120", *args, **kw)


def stats_of(path) -> dict:
    """The tracer's accounting, written to its --stats-file ``path``."""
    with open(path) as f:
        return json.load(f)


def setpriv(*args: str, reason: str = "needs root and setpriv") -> List[str]:
    """The command line of setpriv with ``args``; skips the test (``reason``) without root or
    setpriv (tests/conftest.py fails it instead under SPANPROBE_REQUIRE_BPF=1)."""
    import pytest  # here: bench/ scripts import this module too

    tool = shutil.which("setpriv")
    if tool is None or os.geteuid() != 0:
        pytest.skip(reason)
    return [tool, *args]


def run_spanprobe(*args: str, timeout: float = 60.0, env: Optional[dict] = None, **kw) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(spanprobe_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env=full_env, **kw)


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def wait_attached(tracer: Tracer, sites: int, pid: Optional[int] = None, timeout: float = 60.0) -> None:
    """Wait until ``tracer`` has exactly ``sites`` probe sites attached (in ``pid``, if given).

    Wait on this, not on the application's semaphores, before counting spans
    exactly: a semaphore only says that some tool attached (and a tool raises
    it before its program is linked), so another tracer on the machine would
    let the test fire before this one is listening. See support.attached_sites.
    """
    reached, got = poll_sites(tracer.proc, sites, pid=pid, exact=True, timeout=timeout)
    if not reached:
        raise AssertionError("the tracer has %d probe sites attached%s, not %d; %s"
                             % (got, "" if pid is None else " in pid %d" % pid, sites, tracer.stopped()))
