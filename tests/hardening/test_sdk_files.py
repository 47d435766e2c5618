"""The SDK's files and directories under attack (the file fallback, SPANPROBE_NO_MEMFD=1).

tests/sdk/test_loader.py has the everyday cases (0700 directory, 0600 file,
removal at unload, exit and after SIGKILL, stale cleanup never following
symlinks or touching other users' directories). Here: a hostile umask,
symlinks planted where the loader writes (including between its steps), and
runtime directories owned by another user, from both sides (uid 65534).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile

import pytest

from spanprobe import Provider
from spanprobe.probes import loader
from spanprobe.elf.arch import host_arch
from tests.support import child_env
from tests.support.tracer_helpers import setpriv

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another user")


def image():
    p = Provider("hardened")
    p.add_probe("x", n="u32")
    return p.build_image(host_arch())


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """The file fallback, in a runtime directory of our own."""
    base = tmp_path / "runtime"
    base.mkdir(mode=0o700)
    monkeypatch.setenv("SPANPROBE_NO_MEMFD", "1")
    monkeypatch.setenv("SPANPROBE_RUNTIME_DIR", str(base))
    return base


@pytest.fixture
def victim(tmp_path):
    """A directory and a file an attacker would like us to write into, or over."""
    d = tmp_path / "victim"
    d.mkdir()
    (d / "precious").write_text("keep me")
    return d


def untouched(victim):
    return sorted(os.listdir(victim)) == ["precious"] and (victim / "precious").read_text() == "keep me"


def test_modes_do_not_depend_on_the_umask(runtime):
    old = os.umask(0)
    try:
        backing = loader.load("hardened", image())
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.lstat(backing.directory).st_mode) == 0o700
        assert stat.S_IMODE(os.lstat(backing.path).st_mode) == 0o600
    finally:
        backing.remove_files()


def _planting_mkdtemp(monkeypatch, plant):
    """mkdtemp that lets ``plant(directory)`` act right after the directory is made (a race won)."""
    real = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        directory = real(*args, **kwargs)
        plant(directory)
        return directory

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)


def test_symlink_planted_at_the_file_path(runtime, victim, monkeypatch):
    _planting_mkdtemp(monkeypatch, lambda d: os.symlink(victim / "precious", os.path.join(d, "libhardened.so")))
    with pytest.raises(loader.LoadError, match="File exists"):
        loader.load("hardened", image())
    assert untouched(victim) and os.listdir(runtime) == []


def test_private_directory_swapped_for_a_symlink(runtime, victim, monkeypatch):
    def swap(directory):
        os.rmdir(directory)
        os.symlink(victim, directory)

    _planting_mkdtemp(monkeypatch, swap)
    with pytest.raises(loader.LoadError, match="symlink or file planted there"):
        loader.load("hardened", image())
    assert untouched(victim)


def test_runtime_dir_symlink_resolves_to_its_target(runtime, tmp_path, monkeypatch):
    """A symlink as the runtime directory is followed once, and its target is what is checked."""
    link = tmp_path / "link"
    os.symlink(runtime, link)
    monkeypatch.setenv("SPANPROBE_RUNTIME_DIR", str(link))
    backing = loader.load("hardened", image())
    try:
        assert os.path.dirname(backing.directory) == str(runtime)
    finally:
        backing.remove_files()


@needs_root
@pytest.mark.parametrize("mode", [0o700, 0o777, 0o1777], ids=oct)
def test_runtime_dir_owned_by_another_user_is_refused(runtime, mode):
    os.chown(runtime, NOBODY, NOBODY)
    os.chmod(runtime, mode)
    with pytest.raises(loader.LoadError, match="owned by uid %d, neither us" % NOBODY):
        loader.load("hardened", image())
    assert os.listdir(runtime) == []


def test_runtime_dir_writable_by_others_needs_the_sticky_bit(runtime):
    os.chmod(runtime, 0o777)
    with pytest.raises(loader.LoadError, match="writable by other users and not sticky"):
        loader.load("hardened", image())
    os.chmod(runtime, 0o1777)  # like /tmp: others cannot rename what is ours
    loader.load("hardened", image()).remove_files()


@needs_root
def test_a_foreign_xdg_runtime_dir_falls_back_to_the_temporary_directory(tmp_path, monkeypatch):
    foreign, own = tmp_path / "xdg", tmp_path / "tmp"
    foreign.mkdir()
    own.mkdir(mode=0o700)
    os.chown(foreign, NOBODY, NOBODY)
    monkeypatch.setenv("SPANPROBE_NO_MEMFD", "1")
    monkeypatch.delenv("SPANPROBE_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(foreign))
    monkeypatch.setattr(tempfile, "tempdir", str(own))
    backing = loader.load("hardened", image())
    try:
        assert os.path.dirname(backing.directory) == str(own) and os.listdir(foreign) == []
    finally:
        backing.remove_files()


APP = """
import warnings, spanprobe
warnings.simplefilter("always")
p = spanprobe.Provider("unprivileged")
probe = p.add_probe("x", n="u32")
with warnings.catch_warnings(record=True) as caught:
    p.load()
probe.fire(1)
print(p.usdt_active, [str(w.message) for w in caught])
"""


@needs_root
def test_unprivileged_app_with_a_root_owned_runtime_dir_runs_without_probes():
    """As uid 65534, with only a runtime directory it cannot write: one warning, the app runs."""
    as_nobody = setpriv("--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups", reason="needs setpriv")
    base = tempfile.mkdtemp(prefix="hardening-root-owned-", dir="/tmp")  # reachable by nobody
    try:
        os.chmod(base, 0o755)
        env = dict(child_env(), SPANPROBE_NO_MEMFD="1", SPANPROBE_RUNTIME_DIR=base)
        r = subprocess.run(as_nobody + [sys.executable, "-c", APP], capture_output=True, text=True, env=env,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("False [") and "USDT probes are unavailable here" in r.stdout
        assert "%s: [Errno 13] Permission denied" % base in r.stdout and os.listdir(base) == []
    finally:
        os.rmdir(base)
