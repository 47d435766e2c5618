"""Another process's BPF objects, found among its file descriptors (fdinfos: programs' run times for the
benchmarks), and its maps by name, written through libbpf's C API (exported by bcc's libbcc): to put a
handler in a state it cannot otherwise be driven into on this machine."""

from __future__ import annotations

import ctypes
import os
from typing import Dict, Iterator, List, Tuple


def _libbpf():
    """libbpf's C API, as bcc's libbcc exports it (imported here: bench_sampling uses fdinfos() alone)."""
    from bcc import libbcc
    lib = libbcc.lib
    lib.bpf_map_get_fd_by_id.argtypes = [ctypes.c_uint32]
    lib.bpf_obj_get_info_by_fd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
    lib.bpf_map_update_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]
    return lib

#: struct bpf_map_info (linux/bpf.h): value_size at 12, name (16 bytes) at 24.
_INFO_SIZE, _VALUE_SIZE_AT, _NAME_AT = 80, 12, 24


def _possible_cpus() -> int:
    with open("/sys/devices/system/cpu/possible") as f:
        return max(int(part.split("-")[-1]) for part in f.read().strip().split(",")) + 1


class MapFd:
    """One BPF map, by a descriptor of our own (closed by close())."""

    def __init__(self, map_id: int):
        self._lib = _libbpf()
        self.fd = self._lib.bpf_map_get_fd_by_id(map_id)
        if self.fd < 0:
            raise OSError(-self.fd, "bpf_map_get_fd_by_id(%d)" % map_id)
        info = ctypes.create_string_buffer(_INFO_SIZE)
        size = ctypes.c_uint32(_INFO_SIZE)
        err = self._lib.bpf_obj_get_info_by_fd(self.fd, info, ctypes.byref(size))
        if err:
            os.close(self.fd)
            raise OSError(-err, "bpf_obj_get_info_by_fd")
        self.name = info.raw[_NAME_AT:_NAME_AT + 16].split(b"\0")[0].decode()
        self.value_size = int.from_bytes(info.raw[_VALUE_SIZE_AT:_VALUE_SIZE_AT + 4], "little")

    def set_percpu(self, key: int, value: bytes) -> None:
        """Every CPU's value at u32 ``key`` of a per-CPU map: ``value``, zero-padded to the value size."""
        slot = (self.value_size + 7) // 8 * 8
        data = ctypes.create_string_buffer(value.ljust(slot, b"\0") * _possible_cpus())
        k = ctypes.c_uint32(key)
        err = self._lib.bpf_map_update_elem(self.fd, ctypes.byref(k), data, 0)
        if err:
            raise OSError(-err, "bpf_map_update_elem(%s)" % self.name)

    def close(self) -> None:
        os.close(self.fd)


def fdinfos(pid: int, kind: str) -> Iterator[Tuple[str, Dict[str, str]]]:
    """(descriptor, its /proc fdinfo fields) of each BPF object of ``kind`` ("prog", "map") process ``pid``
    holds; descriptors closed meanwhile are left out."""
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) != "anon_inode:bpf-%s" % kind:
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                yield fd, dict((k, v.strip()) for k, v in (line.split(":", 1) for line in f if ":" in line))
        except OSError:
            continue


def maps_named(pid: int, name: str) -> List[MapFd]:
    """The BPF maps named ``name`` that process ``pid`` holds."""
    found = []
    for map_id in {int(info["map_id"]) for _, info in fdinfos(pid, "map")}:
        m = MapFd(map_id)
        if m.name == name:
            found.append(m)
        else:
            m.close()
    return found
