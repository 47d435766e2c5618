"""Finding providers in live processes (needs root for /proc/PID/map_files; no BPF)."""

from __future__ import annotations

import os

import pytest

from spanprobe.abi.protocol import is_provider_mapping
from spanprobe.abi.protocol import view_of
from spanprobe.elf.reader import read_probes
from spanprobe_tracer.discover import Scanner, procfs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="reads other processes' map_files: needs root")


def test_mapping_names():
    assert is_provider_mapping("/memfd:spanprobe:shop")
    assert is_provider_mapping("/run/user/0/spanprobe-123-ab12cd/libshop.so")
    assert not is_provider_mapping("/usr/lib/x86_64-linux-gnu/libc.so.6")
    assert not is_provider_mapping("/memfd:other")


def test_scan_finds_provider_with_file_offsets(tracee):
    tracee.send("load shop")
    scan = Scanner().scan(tracee.pid)
    (inst,) = scan.providers
    assert inst.image.provider == "shop" and inst.display_path == "/memfd:spanprobe:shop"
    assert inst.attach_path.startswith("/proc/%d/map_files/" % tracee.pid)
    assert set(inst.image.probes) == {"req_start", "req_end", "db_start", "db_end", "note", "tick"}
    with open(inst.attach_path, "rb") as f:
        elf = read_probes(f)
    for note in elf.notes:
        # a view (a probe's later arguments for stock tools) sits at its probe's site
        probe, _ = view_of(note.name) or (note.name, 0)
        loc = inst.image.probes[probe].locations[0]
        assert loc.offset == elf.file_offset(elf.probe_pc(note))
        assert loc.semaphore == elf.file_offset(note.semaphore) and loc.semaphore != 0


def test_plain_usdt_libraries_are_listed_only_when_asked(tracee):
    tracee.send("load shop")
    assert Scanner().scan(tracee.pid).usdt == []
    usdt = Scanner(include_usdt=True).scan(tracee.pid).usdt
    # Every library listed has SDT notes and no schema; the provider is not among them.
    assert all(lib.notes for lib in usdt)
    assert not any(lib.path.startswith("/memfd:spanprobe") for lib in usdt)


def test_several_providers_and_unload(tracee):
    tracee.send("load one")
    tracee.send("load two")
    s = Scanner()
    assert sorted(p.image.provider for p in s.scan(tracee.pid).providers) == ["one", "two"]
    tracee.send("unload one")
    assert [p.image.provider for p in s.scan(tracee.pid).providers] == ["two"]


def test_malformed_provider_warned_once(tracee):
    tracee.send("load broken bad=version")
    tracee.send("load good")
    warnings = []
    s = Scanner(warn=warnings.append)
    for _ in range(3):
        # fresh: as if the memory map had changed, every mapping is looked at again
        assert [p.image.provider for p in s.scan(tracee.pid, fresh=True).providers] == ["good"]
    assert len(warnings) == 1
    assert "schema version 99 is not supported" in warnings[0] and "skipped" in warnings[0]


def test_cache_is_released_with_the_process(tracee_factory):
    s = Scanner()
    ts = [tracee_factory() for _ in range(2)]
    for t in ts:
        t.send("load shop")
        s.scan(t.pid)
    cached = s.files_cached
    s.forget(ts[0].pid)
    assert s.files_cached < cached  # its memfd provider is gone from the cache
    s.retain([])
    assert s.files_cached == 0 and s.processes_known == 0


def test_gone_process():
    import subprocess
    p = subprocess.Popen(["true"])
    p.wait()
    with pytest.raises(procfs.ProcessGone):
        Scanner().scan(p.pid)
    assert not procfs.alive(p.pid)


def test_zombie_is_not_alive():
    import subprocess
    import time
    p = subprocess.Popen(["true"])
    time.sleep(0.3)  # exited, not reaped
    assert procfs.state(p.pid) == "Z"
    assert not procfs.alive(p.pid)
    p.wait()
