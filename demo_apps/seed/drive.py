"""Run a web server under the seed's bcc script and download files from it.

Used by ``python -m demo_apps.seed`` (the article's patched http.server) and
by the tests that run the same script against ``demo_apps.simplehttp``: the
two servers print the same start-up line and fire the same probe.
"""

import contextlib
import os
import re
import subprocess
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
#: The interpreter with bcc (Debian's): the seed's script runs there whatever runs the server.
BCC_PYTHON = "/usr/bin/python3"
TRACER = os.path.join(HERE, "trace_stapsdt.py")
FILES = {"index.html": b"<h1>spanprobe</h1>\n", "notes.txt": b"x" * 827, "work.tar": b"\0" * 112640}
#: One line of the seed script's output (its typo included).
LINE = re.compile(r"^(\d+): (\S+) is downloding file (\S+) \((\d+) bytes\)$")


def env():
    """The environment for a server: spanprobe and demo_apps importable from this checkout."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "sdk"), ROOT] + [p for p in [out.get("PYTHONPATH")] if p])
    return out


def write_files(directory):
    """Fill ``directory`` with FILES; return it."""
    for name, data in FILES.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
    return directory


def parse_banner(line):
    """The port from http.server's "Serving HTTP on HOST port N (...) ..." line."""
    match = re.search(r" port (\d+) ", line)
    if not match:
        raise ValueError(f"not a 'Serving HTTP on ... port N' line: {line!r}")
    return int(match.group(1))


@contextlib.contextmanager
def serving(argv):
    """Start a server (``argv``), yield (process, port), stop it."""
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env())
    try:
        yield server, parse_banner(server.stdout.readline())
    finally:
        stop(server)


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def seed_trace(pid, port, rounds=3, timeout=60.0):
    """Attach the seed's script to ``pid``, download FILES ``rounds`` times, return what it printed.

    The script says nothing until it sees a transfer, and bcc attaches some
    time after it starts: download until every round is reported.
    """
    tracer = subprocess.Popen([BCC_PYTHON, "-u", TRACER, str(pid)], stdout=subprocess.PIPE, text=True)
    try:
        os.set_blocking(tracer.stdout.fileno(), False)
        lines, deadline = [], time.monotonic() + timeout
        while len(lines) < len(FILES) * rounds and time.monotonic() < deadline:
            for name in FILES:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/{name}", timeout=10).read()
            time.sleep(0.2)
            lines += [line.rstrip("\n") for line in iter(tracer.stdout.readline, "")]
        return lines
    finally:
        stop(tracer)


def serve_and_trace(server_argv, rounds=3, timeout=60.0):
    """Run the server, trace it with the seed's script while downloading; return the script's lines."""
    with serving(server_argv) as (server, port):
        return seed_trace(server.pid, port, rounds, timeout)
