"""Helpers for tests that run a probed program and attach real USDT tools to it."""

import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
#: The interpreter with bcc: Debian's. Tools run there whatever runs the tests.
BCC_PYTHON = "/usr/bin/python3"
CAPTURE = os.path.join(HERE, "usdt_capture.py")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.join(ROOT, "sdk"), ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


class Lines:
    """A child process whose stdout lines arrive on a queue, read with timeouts."""

    def __init__(self, argv, **kwargs):
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.PIPE, text=True, env=_env(), **kwargs)
        self._lines = queue.Queue()
        self._stderr = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self._lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self._stderr.append), daemon=True).start()

    @staticmethod
    def _pump(stream, sink):
        for line in stream:
            sink(line.rstrip("\n"))
        sink(None)

    def next(self, timeout=30.0):
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.argv[:3]}: no output in {timeout}s; stderr:\n{self.stderr}") from None
        if line is None:
            self.proc.wait(5)
            raise AssertionError(f"{self.argv[:3]} exited ({self.proc.returncode}); stderr:\n{self.stderr}")
        return line

    def expect(self, prefix, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.1, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line

    @property
    def stderr(self):
        return "\n".join(s for s in self._stderr if s)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def tracee(body, python=None):
    """Run ``body`` (Python source) in a child process; it may use the helpers below.

    Helpers defined for the body: ``ready(**info)`` prints a READY line with
    the pid and ``info``; ``wait_go()`` blocks until the test calls go() (a
    tool may raise semaphores before its uprobes are live, as bcc does, so
    "enabled" alone does not mean "attached"); ``wait_stdin()`` blocks until
    the test closes stdin.
    """
    prelude = textwrap.dedent('''
        import json, os, sys, time
        def ready(**info):
            info["pid"] = os.getpid()
            print("READY " + json.dumps(info), flush=True)
        def wait_go():
            assert sys.stdin.readline().strip() == "go"
        def wait_stdin():
            sys.stdin.read()
    ''')
    return Lines([python or sys.executable, "-c", prelude + textwrap.dedent(body)])


def go(proc):
    proc.proc.stdin.write("go\n")
    proc.proc.stdin.flush()


def ready_info(proc):
    return json.loads(proc.expect("READY ")[len("READY "):])


def capture(pid, probes):
    """Start usdt_capture.py on ``pid``; ``probes`` maps probe name -> list of types."""
    specs = [f"{name}={','.join(types)}" for name, types in probes.items()]
    cap = Lines([BCC_PYTHON, CAPTURE, str(pid)] + specs)
    cap.expect("ATTACHED", timeout=60)
    return cap


def hits(cap, count, timeout=30.0):
    return [json.loads(cap.expect("{", timeout)) for _ in range(count)]
