"""Put a provider image where the dynamic loader can map it, and take it away again.

First choice is a memfd: no file anywhere, nothing to clean up, and it dies with
the process even on SIGKILL. Its descriptor stays open while the provider is
loaded because USDT tools (bcc among them) find a memfd-backed library through
``/proc/PID/fd``. Where a memfd cannot be mapped executable (``vm.memfd_noexec``,
seccomp, old kernels), the image goes into a private directory instead:

* ``$SPANPROBE_RUNTIME_DIR`` or ``$XDG_RUNTIME_DIR`` (per-user, never shared),
  else the system temporary directory; one owned by another user (root
  aside), or writable by others without the sticky bit, is refused;
* always inside a fresh ``spanprobe-<pid>-<random>`` directory made by
  ``mkdtemp`` (mode 0700, unpredictable name), with files created
  ``O_EXCL | O_NOFOLLOW``;
* removed at unload and at exit; directories left by processes that died
  without cleaning up (SIGKILL) are removed by the next provider that loads.

Unloading never unmaps. It replaces each of the object's mappings with an
anonymous private copy of the same bytes (semaphores zero), then closes the
file. USDT tools stop seeing the provider (nothing in /proc/PID/maps refers
to the file any more), while a probe view or function cached by another
thread keeps pointing at valid memory that reads "disabled" and returns at
once. The price is the loader's bookkeeping for each unloaded object (the
handle is never dlclose()d) and its few pages of address space.
"""

import atexit
import collections
import ctypes
import errno
import functools
import os
import shutil
import stat
import tempfile
import threading

from ..abi.protocol import PRIVATE_DIR_PREFIX, fd_path, library_name, memfd_name

_RTLD_LOCAL_NOW = os.RTLD_LOCAL | os.RTLD_NOW


class LoadError(OSError):
    """No way to map the provider object here; the message says what failed."""


PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_PRIVATE, MAP_ANONYMOUS = 0x02, 0x20
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
_MAP_FAILED = ctypes.c_void_p(-1).value
_PAGE = os.sysconf("SC_PAGE_SIZE")


@functools.lru_cache(maxsize=None)
def _libc():
    # PyDLL keeps the GIL across each call: no Python thread runs while one is made.
    libc = ctypes.PyDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mremap.restype = ctypes.c_void_p
    libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int,
                            ctypes.c_void_p]
    return libc


class Backing:
    """One loaded provider object: its dlopen handle and what backs it."""

    def __init__(self, lib, image, fd=None, path=None, directory=None):
        self.lib = lib
        self.image = image
        self.bias = ctypes.addressof(ctypes.c_char.in_dll(lib, image.anchor_symbol)) - image.anchor_addr
        self.fd = fd
        self.path = path
        self.directory = directory
        self.owner_pid = os.getpid()

    def address(self, vaddr):
        return self.bias + vaddr

    def detach(self):
        """Swap every mapping of the file for an anonymous copy, then drop the file.

        Each copy is made elsewhere, filled and protected, then moved over the
        original by one mremap(): a thread still calling a probe site (it read
        the site before unload() repointed it) finds the page mapped and
        executable at every instant. Python code between two calls may run
        other threads, so no state in between may be unusable.
        """
        libc = _libc()
        for seg in self.image.segments:
            start = (self.bias + seg.vaddr) & ~(_PAGE - 1)
            end = (self.bias + seg.vaddr + seg.size + _PAGE - 1) & ~(_PAGE - 1)
            # The live bytes, not the image: the loader has relocated .dynamic
            # in place and still reads it.
            content = bytearray(ctypes.string_at(start, end - start))
            for sem in self.image.semaphore_addrs:
                if start <= self.bias + sem < end:
                    offset = self.bias + sem - start
                    content[offset:offset + 2] = b"\0\0"
            prot = ((PROT_READ if seg.flags & 4 else 0) | (PROT_WRITE if seg.flags & 2 else 0)
                    | (PROT_EXEC if seg.flags & 1 else 0))
            copy = libc.mmap(None, end - start, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            if copy in (None, _MAP_FAILED):
                raise OSError(ctypes.get_errno(), f"cannot copy provider mapping at {start:#x}")
            ctypes.memmove(copy, bytes(content), len(content))
            if libc.mprotect(copy, end - start, prot) != 0:
                errno_ = ctypes.get_errno()
                libc.munmap(copy, end - start)
                raise OSError(errno_, f"cannot protect the copy of provider mapping at {start:#x}")
            if libc.mremap(copy, end - start, end - start, MREMAP_MAYMOVE | MREMAP_FIXED, start) != start:
                errno_ = ctypes.get_errno()
                libc.munmap(copy, end - start)
                raise OSError(errno_, f"cannot detach provider mapping at {start:#x}")
        self.lib = None
        self.remove_files()

    def remove_files(self):
        """Close the memfd or delete the private directory (the latter only in its creator)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.directory is not None and os.getpid() == self.owner_pid:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None


def _dlopen(path):
    # PyDLL: calls keep the GIL. Probe sites are two instructions; releasing
    # and re-taking the GIL around them would cost more than the call.
    return ctypes.PyDLL(path, mode=_RTLD_LOCAL_NOW)


_fd_path_uses = collections.Counter()


def _fresh_fd_path(fd):
    """A name for dlopen() that no earlier load in this process used.

    The loader keeps detached objects (see module doc) and would hand back
    the old one for a name it has seen, so a reused descriptor number gets a
    different spelling of the same path: /proc/self/./fd/N, and so on.
    """
    uses = _fd_path_uses[fd]
    _fd_path_uses[fd] += 1
    return fd_path(fd, uses)


def _load_memfd(name, image):
    fd = os.memfd_create(memfd_name(name), os.MFD_CLOEXEC)
    try:
        os.write(fd, image.data)
        return Backing(_dlopen(_fresh_fd_path(fd)), image, fd=fd)
    except BaseException:
        os.close(fd)
        raise


def _base_dirs():
    explicit = os.environ.get("SPANPROBE_RUNTIME_DIR")
    if explicit:
        return [explicit]
    dirs = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        dirs.append(runtime)
    dirs.append(tempfile.gettempdir())
    return dirs


def _check_private_dir(path):
    """Refuse a directory another user could have planted or can write into."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise LoadError(errno.ENOTDIR, f"{path} is not a directory (symlink or file planted there?)")
    if st.st_uid != os.geteuid():
        raise LoadError(errno.EPERM, f"{path} is owned by uid {st.st_uid}, not by us ({os.geteuid()})")
    if st.st_mode & 0o077:
        raise LoadError(errno.EPERM, f"{path} has mode {oct(st.st_mode & 0o777)}; spanprobe needs 0700")


def _check_base_dir(base):
    """The real path of ``base``, refused if another user controls it.

    Its owner, or anyone when it is writable by others and not sticky, could
    rename our private directory and put a symlink in its place between our
    checks and dlopen(): code of theirs would run in this process.
    """
    base = os.path.realpath(base)
    st = os.stat(base)
    if not stat.S_ISDIR(st.st_mode):
        raise LoadError(errno.ENOTDIR, f"{base} is not a directory")
    if st.st_uid not in (os.geteuid(), 0):
        raise LoadError(errno.EPERM, f"{base} is owned by uid {st.st_uid}, neither us ({os.geteuid()}) nor root")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise LoadError(errno.EPERM, f"{base} is writable by other users and not sticky "
                                     f"(mode {oct(st.st_mode & 0o7777)})")
    return base


def _load_file(name, image, base):
    directory = tempfile.mkdtemp(prefix=f"{PRIVATE_DIR_PREFIX}{os.getpid()}-", dir=_check_base_dir(base))
    try:
        _check_private_dir(directory)
        path = os.path.join(directory, library_name(name))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(image.data)
        return Backing(_dlopen(path), image, path=path, directory=directory)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _memfd_allowed():
    return hasattr(os, "memfd_create") and os.environ.get("SPANPROBE_NO_MEMFD", "") in ("", "0")


def load(name, image):
    """Map ``image`` (an elf.writer.Image) into this process: a memfd, else a private directory.

    Raises LoadError listing every attempt when none works.
    """
    failures = []
    if _memfd_allowed():
        try:
            return _track(_load_memfd(name, image))
        except OSError as exc:
            failures.append(f"memfd: {exc}")
    for base in _base_dirs():
        remove_stale(base)
        try:
            return _track(_load_file(name, image, base))
        except OSError as exc:
            failures.append(f"{base}: {exc}")
    raise LoadError(errno.ENOEXEC, "cannot load the provider object: " + "; ".join(failures))


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(base):
    """Remove our spanprobe directories in ``base`` whose process is gone."""
    try:
        entries = os.listdir(base)
    except OSError:
        return
    me = os.geteuid()
    for entry in entries:
        if not entry.startswith(PRIVATE_DIR_PREFIX):
            continue
        pid_part = entry[len(PRIVATE_DIR_PREFIX):].split("-", 1)[0]
        if not pid_part.isdigit() or _pid_alive(int(pid_part)):
            continue
        path = os.path.join(base, entry)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        # Only real directories that are ours: never follow a planted symlink,
        # never touch another user's files.
        if stat.S_ISDIR(st.st_mode) and st.st_uid == me:
            shutil.rmtree(path, ignore_errors=True)


_live = set()
_live_lock = threading.Lock()


def _track(backing):
    with _live_lock:
        _live.add(backing)
    return backing


def untrack(backing):
    with _live_lock:
        _live.discard(backing)


@atexit.register
def remove_all_files():
    """Remove the files of every provider loaded in this process (at exit; a forked child's spare
    its parent's directories).

    Files only: unmapping at exit could pull code from under a daemon thread
    still firing probes. The mappings go with the process.
    """
    with _live_lock:
        for backing in list(_live):
            backing.remove_files()
        _live.clear()
