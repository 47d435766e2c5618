"""`spanprobe trace -- COMMAND`: start a program so that its first probe is already traced.

The program is forked and held at a gate (a pipe) before exec, so the tracer
can attach its dlopen() watcher (bpf/core.c) to the child first. From then on
every provider the program loads stops it briefly (SIGSTOP from the BPF
program) until the tracer has attached to the provider and resumes it
(SIGCONT, ``resume``): no probe fires unseen, however early.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import List, Optional


class LaunchError(OSError):
    pass


class Launched:
    """A child process started at a gate; ``release()`` lets it exec the command."""

    def __init__(self, argv: List[str]):
        if not argv:
            raise LaunchError("no command given after --")
        self.argv = argv
        read_fd, write_fd = os.pipe()
        # Reports exec failure to the parent: closed on successful exec (CLOEXEC).
        err_read, err_write = os.pipe2(os.O_CLOEXEC) if hasattr(os, "pipe2") else os.pipe()
        pid = os.fork()
        if pid == 0:  # child: wait at the gate, then become the command
            try:
                os.close(write_fd)
                os.close(err_read)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                if os.read(read_fd, 1) != b"g":
                    os._exit(126)
                os.close(read_fd)
                os.execvp(argv[0], argv)
            except OSError as exc:
                try:
                    os.write(err_write, ("%d:%s" % (exc.errno or 0, exc.strerror or exc)).encode())
                finally:
                    os._exit(127)
            os._exit(127)  # pragma: no cover
        os.close(read_fd)
        os.close(err_write)
        self.pid = pid
        self._gate = write_fd
        self._err = err_read
        self.returncode: Optional[int] = None

    def release(self) -> None:
        """Let the child exec; raises LaunchError if exec fails (command not found, ...)."""
        os.write(self._gate, b"g")
        os.close(self._gate)
        data = os.read(self._err, 4096)
        os.close(self._err)
        if data:
            self.wait(block=True)
            _, _, message = data.decode(errors="replace").partition(":")
            raise LaunchError("cannot run %s: %s" % (self.argv[0], message))

    def poll(self) -> Optional[int]:
        return self.wait(block=False)

    def stop(self, grace_s: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if it is still running after ``grace_s``; its exit status."""
        import time
        if self.poll() is None:
            self.signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while self.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.poll() is None:
                self.signal(signal.SIGKILL)
        return self.wait(block=True)

    def wait(self, block: bool) -> Optional[int]:
        if self.returncode is not None:
            return self.returncode
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.returncode = 1
            return self.returncode
        if pid == 0:
            return None
        if os.WIFEXITED(status):
            self.returncode = os.WEXITSTATUS(status)
        elif os.WIFSIGNALED(status):
            self.returncode = 128 + os.WTERMSIG(status)
        else:  # pragma: no cover - stopped/continued are not reported without WUNTRACED
            return None
        return self.returncode

    def signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def libc_path() -> Optional[str]:
    """The C library this process maps (the child starts with the same one)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split(None, 5)[-1].strip() if len(line.split()) >= 6 else ""
                base = os.path.basename(path)
                if base.startswith("libc.so") or (base.startswith("libc-") and base.endswith(".so")):
                    return path
    except OSError:
        pass
    return None


def watch_dlopen(core_bpf, pid: int) -> bool:
    """Attach the dlopen() watcher to ``pid``. False (with a warning) if libc has no dlopen."""
    path = libc_path()
    if path is None:
        print("spanprobe: warning: cannot find the C library; providers loaded by the command "
              "are found by periodic rescans only", file=sys.stderr)
        return False
    try:
        core_bpf.attach_uprobe(name=path.encode(), sym=b"dlopen", fn_name=b"sp_dlopen_enter", pid=pid)
        core_bpf.attach_uretprobe(name=path.encode(), sym=b"dlopen", fn_name=b"sp_dlopen_return", pid=pid)
    except Exception as exc:
        print("spanprobe: warning: cannot watch dlopen() in %s (%s); providers loaded by the command "
              "are found by periodic rescans only" % (path, exc), file=sys.stderr)
        return False
    return True


def resume(pid: int) -> None:
    """SIGCONT a process the dlopen() watcher stopped (gone already: nothing to do)."""
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
