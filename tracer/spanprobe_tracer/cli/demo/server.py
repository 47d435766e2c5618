"""Demo 1 for `spanprobe demo`: generated files, served by ``python -m demo_apps.simplehttp``.

Everything the demo makes lives in one private temporary directory (the
served files, the server's log, any provider file the SDK falls back to when
it cannot use a memfd), and the server runs in a process group of its own.
So stopping is one ``killpg`` and one ``rmtree``, whether the demo ends,
fails or is interrupted; and should the demo itself be killed outright, the
kernel sends the server SIGTERM (PR_SET_PDEATHSIG) rather than leave it
serving.
"""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, Optional

from demo_apps.seed.drive import parse_banner

from ...errors import TracerError

#: The files served (path under the served directory -> size in bytes): a page,
#: a text file, and two larger ones in a subdirectory whose listing is also fetched.
FILES: Dict[str, int] = {
    "index.html": 187,
    "notes.txt": 12_288,
    "data/report.csv": 98_304,
    "data/archive.bin": 2 << 20,
}
#: One round of downloads: each file, a directory listing, and a path that is not there (404).
DOWNLOADS = ("/index.html", "/notes.txt", "/data/report.csv", "/data/archive.bin", "/data/", "/missing.txt")

PR_SET_PDEATHSIG = 1


def content(path: str, size: int) -> bytes:
    """Deterministic bytes of ``size`` for ``path``: readable text for text files."""
    if path.endswith(".bin"):
        return bytes((i * 131 + 7) & 0xFF for i in range(256)) * (size // 256) + b"\0" * (size % 256)
    line = ("spanprobe demo file %s\n" % path).encode()
    return (line * (size // len(line) + 1))[:size]


def _die_with_parent() -> None:
    """In the server child before exec: SIGTERM it if the demo dies without stopping it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class DemoServer:
    """The scratch directory and the server process; a context manager that always cleans up."""

    def __init__(self, python: str = sys.executable):
        self.python = python
        self.scratch = tempfile.mkdtemp(prefix="spanprobe-demo-")
        self.www = os.path.join(self.scratch, "www")
        self.log_path = os.path.join(self.scratch, "server.log")
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0
        try:
            for path, size in FILES.items():
                full = os.path.join(self.www, path)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                with open(full, "wb") as f:
                    f.write(content(path, size))
        except BaseException:
            shutil.rmtree(self.scratch, ignore_errors=True)
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def start(self, stop: threading.Event, timeout: float = 60.0) -> int:
        """Start the server and wait for its "Serving HTTP on ... port N" line; return N.

        The server prints that line only once its provider is loaded, so from
        then on the tracer can find the probes.
        """
        run_dir = os.path.join(self.scratch, "run")
        os.mkdir(run_dir, 0o700)
        env = dict(os.environ, SPANPROBE_RUNTIME_DIR=run_dir, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "demo_apps.simplehttp", "--bind", "127.0.0.1", "--port", "0",
                 "--directory", self.www],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd=self.scratch, env=env,
                start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            if time.monotonic() >= deadline:
                raise TracerError("the demo server did not start within %.0f s%s" % (timeout, self.log_tail()))
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline().decode(errors="replace")
                if not line:
                    raise TracerError("the demo server exited (status %s) before serving%s"
                                      % (self.proc.wait(), self.log_tail()))
                self.port = parse_banner(line)
                return self.port
        return 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """The end of the server's stderr, to show with an error ("" if it said nothing)."""
        try:
            with open(self.log_path, errors="replace") as f:
                tail = f.read().splitlines()[-lines:]
        except OSError:
            return ""
        return (":\n  " + "\n  ".join(tail)) if tail else ""

    def stop(self) -> None:
        """Stop the server's process group (SIGTERM, SIGKILL after 5 s) and remove the scratch directory."""
        try:
            if self.proc is not None:
                if self.proc.poll() is None:
                    self._signal_group(signal.SIGTERM)
                    try:
                        self.proc.wait(5)
                    except subprocess.TimeoutExpired:
                        self._signal_group(signal.SIGKILL)
                        self.proc.wait()
                self.proc.stdout.close()
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # start_new_session: its pid is its group's id
        except ProcessLookupError:
            pass

    def __enter__(self) -> "DemoServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
