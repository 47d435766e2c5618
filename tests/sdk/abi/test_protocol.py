"""Where a loaded provider shows up is what spanprobe.abi.protocol says a tracer will find."""

import os

import pytest

from spanprobe import Provider
from spanprobe.abi.protocol import PRIVATE_DIR_PREFIX, is_provider_mapping, library_name


def mapped_paths(inode):
    """The paths /proc/self/maps gives the mappings of the file with ``inode``."""
    paths = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and int(fields[4]) == inode:
                paths.add(fields[5].rstrip("\n").removesuffix(" (deleted)"))
    return paths


@pytest.mark.parametrize("memfd", [True, False], ids=["memfd", "private directory"])
def test_a_loaded_provider_is_found_by_its_mapping(memfd, monkeypatch, tmp_path):
    if not memfd:
        monkeypatch.setenv("SPANPROBE_NO_MEMFD", "1")
        monkeypatch.setenv("SPANPROBE_RUNTIME_DIR", str(tmp_path))
    p = Provider("findme")
    p.add_probe("x")
    with p:
        backing = p.backing
        inode = os.fstat(backing.fd).st_ino if memfd else os.stat(backing.path).st_ino
        paths = mapped_paths(inode)
        assert paths and all(is_provider_mapping(path) for path in paths), paths
        if not memfd:
            assert paths == {backing.path}
            assert os.path.basename(backing.directory).startswith(PRIVATE_DIR_PREFIX)
            assert os.path.basename(backing.path) == library_name("findme")


@pytest.mark.parametrize("path", ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/memfd:other", "/memfd:spanprobe",
                                  "/tmp/spanprobe-1-x", "/tmp/other-1-x/libfindme.so", ""])
def test_other_mappings_are_not_providers(path):
    assert not is_provider_mapping(path)
