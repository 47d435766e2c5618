"""What the hardening tests share: the app (app.py) and its forked children, the tracer's output.

The tracer tests' helpers (tests/tracer: tracer_helpers, otlp_receiver) are
reused as they are; importing this module makes them importable.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tracer"))

from tracer_helpers import Tracee, Tracer, read_jsonl  # noqa: E402

APP = HERE / "app.py"


class App(Tracee):
    """app.py in a subprocess; fork() gives a handle on a child it forks."""

    def __init__(self, env=None):
        super().__init__(env=env, script=APP)

    def fork(self, fifo: Path, exec_: bool = False) -> "Child":
        os.mkfifo(fifo)
        pid = self.send("fork %s%s" % (fifo, " exec" if exec_ else ""))["child"]
        return Child(self, pid, open(fifo, "w"))


class Child:
    """A process app.py forked: commands go through its FIFO, replies come on the shared stdout."""

    def __init__(self, parent: App, pid: int, commands):
        self.parent, self.pid, self.commands = parent, pid, commands

    def send(self, command: str, timeout: float = 30.0) -> dict:
        self.commands.write(command + "\n")
        self.commands.flush()
        reply = self.parent.read(timeout)
        assert reply.get("ok"), reply
        return reply

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.commands.close()


def jsonl_args(tmp_path, *args):
    """`spanprobe trace` to tmp_path/spans.jsonl, accounting in tmp_path/stats.json, -v."""
    return ("trace", "--exporter", "jsonl", "--output", str(tmp_path / "spans.jsonl"),
            "--stats-file", str(tmp_path / "stats.json"), "--duration", "120", "-v", *args)


def jsonl_tracer(tmp_path, *args) -> Tracer:
    return Tracer(*jsonl_args(tmp_path, *args))


def spans_of(tmp_path, pid=None):
    """The spans written so far to tmp_path/spans.jsonl (of process ``pid``)."""
    return [s for s in read_jsonl(tmp_path / "spans.jsonl") if pid is None or s["resource"]["process.pid"] == pid]


def stats_of(tmp_path) -> dict:
    return json.loads((tmp_path / "stats.json").read_text())


def rss_kib(pid: int) -> int:
    """Resident memory (VmRSS, KiB) of a running process."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)
