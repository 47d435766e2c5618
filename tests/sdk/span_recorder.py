"""Record what span and event probes would pass to their probe sites, without BPF.

Each probe of a provider that is not loaded gets a raised semaphore and a
Python "probe site" that decodes the arguments exactly as the SDK hands them
to the real site (ids as ctypes argument objects, bytes for strings), so the tests check the
protocol values the SDK produces. Tests with real BPF (test_span_bpf.py)
check that the same values reach a tracer.
"""

import ctypes
import struct
import threading

from spanprobe.semaphore import Semaphore

# What a C function receives for a 64-bit argument: a callback called through
# a prototype without argtypes, so ctypes passes the argument exactly as it
# passes it to a probe site. (from_param objects, which the SDK uses for ids,
# have no Python-level value.)
_U64 = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64)(lambda v: v)
as_u64 = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.cast(_U64, ctypes.c_void_p).value)


def _decode(arg_type, value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if value is None:  # NULL: a str argument with no value, read as empty (docs/abi.md)
        assert arg_type == "str", arg_type
        return ""
    if not isinstance(value, int):  # a ctypes 64-bit argument
        value = as_u64(value)
        if arg_type == "i64" and value >= 1 << 63:
            value -= 1 << 64
    if arg_type == "f64":
        return struct.unpack("<d", struct.pack("<Q", value))[0]
    return value


class Recorder:
    """hits: list of dicts {"probe": name, <arg name>: value, ...} in firing order."""

    def __init__(self, provider):
        self.hits = []
        self._lock = threading.Lock()
        self.provider = provider
        for probe in provider.probes.values():
            probe._attach_site(Semaphore(1), self._site(probe))

    def _site(self, probe):
        names = [a.name for a in probe.args]
        types = [a.type.value for a in probe.args]

        def site(*args):
            hit = {"probe": probe.name}
            hit.update(zip(names, map(_decode, types, args)))
            with self._lock:
                self.hits.append(hit)

        return site

    def set_enabled(self, enabled):
        for probe in self.provider.probes.values():
            probe.enabled.value = 1 if enabled else 0

    def of(self, probe_name):
        return [h for h in self.hits if h["probe"] == probe_name]

    def clear(self):
        self.hits.clear()
