"""Where provider objects live: memfd by default, else a private directory, never litter."""

import os
import signal
import stat
import subprocess
import sys

import pytest

from spanprobe import Provider
from spanprobe.probes import loader
from tests.support import ROOT


def test_memfd_is_the_default_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SPANPROBE_RUNTIME_DIR", str(tmp_path))
    p = Provider("memfdonly")
    p.add_probe("x")
    with p:
        assert p.backing.fd is not None and p.backing.path is None
    assert os.listdir(tmp_path) == []


@pytest.fixture
def no_memfd(tmp_path, monkeypatch):
    monkeypatch.setenv("SPANPROBE_NO_MEMFD", "1")
    monkeypatch.setenv("SPANPROBE_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def test_fallback_directory_is_private_and_removed_at_unload(no_memfd):
    p = Provider("filebacked")
    p.add_probe("x")
    p.load()
    directory = p.backing.directory
    st = os.lstat(directory)
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    assert os.path.basename(directory).startswith(f"spanprobe-{os.getpid()}-")
    assert stat.S_IMODE(os.stat(p.backing.path).st_mode) == 0o600
    assert p.backing.path in open("/proc/self/maps").read()
    p.unload()
    assert os.listdir(no_memfd) == []


def _child(code, env):
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)


def test_files_are_removed_at_exit_and_after_sigkill(no_memfd):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "sdk"))
    body = ("import spanprobe, sys, time\np = spanprobe.Provider('exiting')\np.add_probe('x')\n"
            "p.load()\nprint('up', flush=True)\n")
    clean = _child(body, env)
    assert clean.stdout.readline() == "up\n"
    clean.wait(30)
    assert os.listdir(no_memfd) == []  # atexit removed it

    killed = _child(body + "time.sleep(60)\n", env)
    assert killed.stdout.readline() == "up\n"
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert [d for d in os.listdir(no_memfd) if d.startswith(f"spanprobe-{killed.pid}-")]
    p = Provider("next")  # the next provider to load cleans up after the dead one
    p.add_probe("x")
    with p:
        left = os.listdir(no_memfd)
        assert left == [os.path.basename(p.backing.directory)]


def test_stale_cleanup_never_follows_symlinks_or_touches_other_users(no_memfd, tmp_path_factory):
    victim = tmp_path_factory.mktemp("victim")
    (victim / "precious").write_text("keep me")
    dead_pid = 2**22 + 12345  # above pid_max's default: never alive
    os.symlink(victim, no_memfd / f"spanprobe-{dead_pid}-planted")
    foreign = no_memfd / f"spanprobe-{dead_pid}-foreign"
    foreign.mkdir()
    (foreign / "theirs").write_text("not ours")
    if os.geteuid() == 0:
        os.chown(foreign, 65534, 65534)
    loader.remove_stale(str(no_memfd))
    assert (victim / "precious").read_text() == "keep me"
    assert os.path.islink(no_memfd / f"spanprobe-{dead_pid}-planted")
    if os.geteuid() == 0:
        assert (foreign / "theirs").exists()


def test_unusable_runtime_dirs_are_reported_not_crashed(monkeypatch, tmp_path):
    monkeypatch.setenv("SPANPROBE_NO_MEMFD", "1")
    monkeypatch.setenv("SPANPROBE_RUNTIME_DIR", str(tmp_path / "does-not-exist"))
    with pytest.raises(loader.LoadError, match="does-not-exist"):
        loader.load("x", Provider("x").build_image(loader_arch()))


def loader_arch():
    from spanprobe.elf.arch import host_arch
    return host_arch()


def test_forked_child_does_not_delete_the_parents_files(no_memfd):
    p = Provider("forked")
    p.add_probe("x")
    with p:
        pid = os.fork()
        if pid == 0:
            loader.remove_all_files()
            os._exit(0)
        os.waitpid(pid, 0)
        assert os.path.exists(p.backing.path)
