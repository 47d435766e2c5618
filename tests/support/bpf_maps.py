"""Another process's BPF maps, reached from a test: found among that process's file descriptors by name,
written through libbpf's C API (exported by bcc's libbcc), to put a handler in a state it cannot otherwise
be driven into on this machine."""

from __future__ import annotations

import ctypes
import os
from typing import List

from bcc import libbcc

_lib = libbcc.lib
_lib.bpf_map_get_fd_by_id.argtypes = [ctypes.c_uint32]
_lib.bpf_obj_get_info_by_fd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
_lib.bpf_map_update_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]

#: struct bpf_map_info (linux/bpf.h): value_size at 12, name (16 bytes) at 24.
_INFO_SIZE, _VALUE_SIZE_AT, _NAME_AT = 80, 12, 24


def _possible_cpus() -> int:
    with open("/sys/devices/system/cpu/possible") as f:
        return max(int(part.split("-")[-1]) for part in f.read().strip().split(",")) + 1


class MapFd:
    """One BPF map, by a descriptor of our own (closed by close())."""

    def __init__(self, map_id: int):
        self.fd = _lib.bpf_map_get_fd_by_id(map_id)
        if self.fd < 0:
            raise OSError(-self.fd, "bpf_map_get_fd_by_id(%d)" % map_id)
        info = ctypes.create_string_buffer(_INFO_SIZE)
        size = ctypes.c_uint32(_INFO_SIZE)
        err = _lib.bpf_obj_get_info_by_fd(self.fd, info, ctypes.byref(size))
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
        err = _lib.bpf_map_update_elem(self.fd, ctypes.byref(k), data, 0)
        if err:
            raise OSError(-err, "bpf_map_update_elem(%s)" % self.name)

    def close(self) -> None:
        os.close(self.fd)


def maps_named(pid: int, name: str) -> List[MapFd]:
    """The BPF maps named ``name`` that process ``pid`` holds."""
    found, seen = [], set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) != "anon_inode:bpf-map":
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                info = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        map_id = int(info["map_id"])
        if map_id in seen:
            continue
        seen.add(map_id)
        m = MapFd(map_id)
        if m.name == name:
            found.append(m)
        else:
            m.close()
    return found
