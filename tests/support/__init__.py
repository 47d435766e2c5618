"""Helpers for tests that run a probed program and attach real USDT tools to it."""

import json
import os
import queue
import socket
import subprocess
import sys
import textwrap
import threading
import time

from spanprobe.abi.protocol import ROLE_SPAN

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
#: The interpreter with bcc: Debian's. Tools run there whatever runs the tests.
BCC_PYTHON = "/usr/bin/python3"
CAPTURE = os.path.join(HERE, "usdt_capture.py")
#: The console script scripts/setup.sh installs in .venv, as scripts/demo.sh runs it.
SPANPROBE = os.path.join(os.path.dirname(sys.executable), "spanprobe")


def child_env():
    """The environment for a child Python: spanprobe and demo_apps importable from this checkout."""
    # Imported here, not above: bench/ scripts import this module where demo_apps may not be.
    from demo_apps.seed.drive import env
    return env()


class Lines:
    """A child process whose stdout lines arrive on a queue, read with timeouts."""

    def __init__(self, argv, **kwargs):
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.PIPE, text=True, env=child_env(), **kwargs)
        self._lines = queue.Queue()
        self._stderr = []
        self._pumps = [threading.Thread(target=self._pump, args=(self.proc.stdout, self._lines.put), daemon=True),
                       threading.Thread(target=self._pump, args=(self.proc.stderr, self._stderr.append), daemon=True)]
        for pump in self._pumps:
            pump.start()

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

    def wait(self, timeout=30.0):
        """The exit status, once the process has exited and its output has been read to the end
        (to where every process holding the pipes, children included, closed them)."""
        deadline = time.monotonic() + timeout
        status = self.proc.wait(timeout)
        for pump in self._pumps:
            pump.join(max(0.0, deadline - time.monotonic()))
            if pump.is_alive():
                raise AssertionError(f"{self.argv[:3]}: output still open {timeout}s on; stderr:\n{self.stderr}")
        return status

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


def python_child(body, python=None):
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


def as_dicts(raw, layouts):
    """Name each hit's arguments: layouts maps probe -> argument names."""
    out = []
    for hit in raw:
        record = dict(zip(layouts[hit["probe"]], hit["args"]))
        record["probe"] = hit["probe"]
        out.append(record)
    return out


def by_probe(records, name):
    return [r for r in records if r["probe"] == name]


def trace(r):
    return r["trace_id_high"], r["trace_id_low"]


def semaphores(pid, provider):
    """``provider``'s semaphores in process ``pid``, {probe: count}, read from outside as a tracer
    would: the SDT notes of the mapped object, then /proc/PID/mem. Views share their probe's
    semaphore and are left out."""
    from spanprobe.abi.protocol import MAPS_MEMFD_PREFIX, view_of
    from spanprobe.elf.reader import read_elf

    for line in open(f"/proc/{pid}/maps"):
        fields = line.split()
        if fields[2] == "00000000" and fields[5:6] == [MAPS_MEMFD_PREFIX + provider]:
            start = int(line.split("-")[0], 16)
            with open(f"/proc/{pid}/map_files/{fields[0]}", "rb") as f:
                notes = read_elf(f.read()).notes
            with open(f"/proc/{pid}/mem", "rb") as mem:
                values = {}
                for note in notes:
                    if view_of(note.name):
                        continue
                    mem.seek(start + note.semaphore)
                    values[note.name] = int.from_bytes(mem.read(2), "little")
                return values
    raise AssertionError(f"provider {provider} is not mapped in pid {pid}")


def attached_sites(tracer_pid, pid=None):
    """Probe sites the spanprobe tracer ``tracer_pid`` has attached: its BPF link descriptors, one
    a site. Unlike a semaphore, which any tool attached to the probe raises, this is that
    tracer's own: a test waiting on it is not fooled by another tracer (say, an --all one from a
    test run going on beside it) that attached first.

    With ``pid``, only the sites in that process (for --all, where other processes' providers
    count too): the kernel names the file a uprobe link probes in the link's fdinfo, and the
    tracer names a provider's file under /proc/PID/. A kernel that does not name it skips the test.
    """
    links = 0
    for fd in os.listdir(f"/proc/{tracer_pid}/fd"):
        try:
            if os.readlink(f"/proc/{tracer_pid}/fd/{fd}") != "anon_inode:bpf_link":
                continue
            if pid is None:
                links += 1
                continue
            with open(f"/proc/{tracer_pid}/fdinfo/{fd}") as f:
                info = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except OSError:
            continue  # closed meanwhile
        if "name" not in info:
            import pytest
            pytest.skip("this kernel does not name the file of a uprobe's BPF link in its fdinfo")
        links += info["name"].startswith(f"/proc/{pid}/")
    return links


def poll_sites(tracer, sites, pid=None, exact=False, timeout=60.0):
    """Poll until the tracer process ``tracer`` (a Popen) has ``sites`` probe sites attached
    (attached_sites; in ``pid`` if given): at least that many, or exactly with ``exact``.

    Gives up after ``timeout`` seconds, or once the tracer has exited.
    Returns (reached, the count last seen).
    """
    deadline = time.monotonic() + timeout
    while True:
        got = attached_sites(tracer.pid, pid)
        if got == sites if exact else got >= sites:
            return True, got
        if tracer.poll() is not None or time.monotonic() > deadline:
            return False, got
        time.sleep(0.05)


def await_sites(tracer, sites, timeout=60.0):
    """Wait until the tracer process ``tracer`` (a Popen with stderr piped) has at least ``sites``
    probe sites attached (attached_sites); RuntimeError with its stderr if it exits or times out."""
    reached, got = poll_sites(tracer, sites, timeout=timeout)
    if reached:
        return
    if tracer.poll() is not None:
        raise RuntimeError("the tracer exited before attaching: %s" % tracer.stderr.read())
    raise RuntimeError("the tracer attached %d of %d probe sites in %.0f s" % (got, sites, timeout))


def raw(port, data):
    """(status, body) of whatever ``data`` is, sent as the request to 127.0.0.1:``port``, read
    until the server closes the connection.

    A request line that does not parse is answered the HTTP/0.9 way: a body
    with no status line and no headers (status None).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(data)
        response = b"".join(iter(lambda: conn.recv(65536), b""))
    if not response.startswith(b"HTTP/"):
        return None, response
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def declared(provider):
    """(types, names) of every probe of an SDK provider but its spans' one-hit probes (the start and end
    probes carry the same): capture()'s and as_dicts()' arguments.

    Read from the provider's own declarations, so a test follows the
    application's probes instead of restating them.
    """
    probes = [p for p in provider.probes.values() if p.role != ROLE_SPAN]
    return ({p.name: [a.type.value for a in p.args] for p in probes},
            {p.name: [a.name for a in p.args] for p in probes})


def assert_seed_lines(lines, served):
    """``lines`` are the seed script's reports of downloads of every demo_apps.seed FILES from ``served``."""
    from demo_apps.seed.drive import FILES, LINE
    seen = set()
    for line in lines:
        match = LINE.match(line)
        assert match, line
        _, client, path, size = match.groups()
        assert client == "127.0.0.1"
        name = os.path.basename(path)
        assert path == os.path.join(served, name)
        assert int(size) == len(FILES[name])
        seen.add(name)
    assert seen == set(FILES)


def run_traced(body, probes, layouts, count=None, last=None):
    """Run ``body`` (see python_child(); it calls ready(), wait_go(), then prints DONE) under capture().

    Returns the hits, named by ``layouts``: ``count`` of them, or all up to
    and including the first hit of the probe ``last``.
    """
    proc = python_child(body)
    cap = None
    try:
        cap = capture(ready_info(proc)["pid"], probes)
        go(proc)
        if count is not None:
            records = as_dicts(hits(cap, count, timeout=60), layouts)
        else:
            records = []
            while not records or records[-1]["probe"] != last:
                records += as_dicts(hits(cap, 1, timeout=60), layouts)
        proc.expect("DONE", timeout=60)
        return records
    finally:
        if cap is not None:
            cap.stop()
        proc.stop()
