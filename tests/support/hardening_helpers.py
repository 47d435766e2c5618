"""What the hardening tests share: the app (hardening_app) and its forked children, the tracer's output."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.support import tracer_helpers
from tests.support.tracer_helpers import Tracee, Tracer, read_jsonl


class App(Tracee):
    """hardening_app.py in a subprocess; fork() gives a handle on a child it forks. close() kills
    the children it forked, then the app."""

    def __init__(self, env=None):
        self.children = []
        super().__init__(env=env, script=Path(__file__).resolve().parent / "hardening_app.py")

    def fork(self, fifo: Path, exec_: bool = False) -> "Child":
        os.mkfifo(fifo)
        pid = self.send("fork %s%s" % (fifo, " exec" if exec_ else ""))["child"]
        self.children.append(Child(self, pid, open(fifo, "w")))
        return self.children[-1]

    def close(self) -> None:
        for child in self.children:
            child.close()
        super().close()


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
        if self.commands.closed:
            return  # closed already: its pid may be another process's by now
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.commands.close()


def jsonl_tracer(tmp_path, *args, **kw) -> Tracer:
    """`spanprobe trace` to tmp_path/spans.jsonl, accounting in tmp_path/stats.json, -v."""
    return tracer_helpers.jsonl_tracer(tmp_path / "spans.jsonl", tmp_path / "stats.json", "-v", *args, **kw)


def spans_of(tmp_path, pid=None):
    """The spans written so far to tmp_path/spans.jsonl (of process ``pid``); event lines left out."""
    return [s for s in read_jsonl(tmp_path / "spans.jsonl")
            if "signal" not in s and (pid is None or s["resource"]["process.pid"] == pid)]


def stats_of(tmp_path) -> dict:
    return tracer_helpers.stats_of(tmp_path / "stats.json")
