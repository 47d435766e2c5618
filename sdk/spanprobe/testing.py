"""Test doubles: record what probes would pass to their probe sites, without BPF or a tracer.

    rec = Recorder(provider)          # before provider.load(), or with no load at all
    handle("GET")                     # the application code under test
    assert rec.of("handle__start")[0]["http.method"] == "GET"

Each probe of a provider that is not loaded gets a raised semaphore and a
Python "probe site" that decodes the arguments exactly as the SDK hands them
to the real site (ids as ctypes argument objects, bytes for strings), so a
test checks the protocol values the SDK produces (docs/abi.md): integers,
floats, str values as str and bytes values as the bytes after their header.
"""

import ctypes
import struct
import threading

from .abi.protocol import BYTES_TRUNCATED, END_ARGS, ROLE_SPAN, START_ARGS, payload_format, payload_words
from .probes.semaphore import Semaphore

# What a C function receives for a 64-bit argument: a callback called through
# a prototype without argtypes, so ctypes passes the argument exactly as it
# passes it to a probe site. (from_param objects, which the SDK uses for ids,
# have no Python-level value.)
_U64 = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64)(lambda v: v)
#: The integer a probe site receives for a 64-bit argument object (a ctypes from_param object).
as_u64 = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.cast(_U64, ctypes.c_void_p).value)


def _decode(arg_type, value):
    if isinstance(value, bytes):
        if arg_type == "bytes":  # the length header, then the data (docs/abi.md)
            length = int.from_bytes(value[:4], "little") & (BYTES_TRUNCATED - 1)
            return value[4:4 + length]
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


def _word_value(arg_type, word, slots):
    """A payload word as the value its probe argument would decode to: a str attribute's is the next of
    ``slots`` (None for the error strings), up to the first NUL; an error string's or a bytes word is an
    address, read during the hit; 0 is NULL."""
    if arg_type.value == "str" and slots is not None:
        return next(slots).split(b"\0", 1)[0].decode("utf-8")
    if arg_type.value == "str":
        return ctypes.string_at(word).decode("utf-8") if word else ""
    if arg_type.value == "bytes":
        if not word:
            return b""
        length = int.from_bytes(ctypes.string_at(word, 4), "little") & (BYTES_TRUNCATED - 1)
        return ctypes.string_at(word + 4, length)
    return word  # unpacked as the type's struct code: signed, unsigned, or the float itself


def span_payload(start, end, value):
    """A span probe's bytes value (after its header) as {"start_time": ns, "start": {arg: value},
    "end": {arg: value}}: each of the start and end probes' arguments as their own hits would carry
    it, strings as the payload carries them (cut at PAYLOAD_STR bytes). Call it during the hit."""
    fmt = payload_format([a.type for a in start.args], [a.type for a in end.args])
    words = struct.unpack(fmt, value)[1:]
    first_start, first_end = payload_words(len(start.args))
    slots = iter(words[first_end + len(end.args):])
    out = {"start_time": words[0]}
    for key, probe, first, fixed in (("start", start, first_start, len(START_ARGS)),
                                     ("end", end, first_end, len(END_ARGS))):
        out[key] = {a.name: _word_value(a.type, w, slots if i >= fixed else None)
                    for i, (a, w) in enumerate(zip(probe.args, words[first:first + len(probe.args)]))}
    return out


class Recorder:
    """hits: list of dicts {"probe": name, <arg name>: value, ...} in firing order.

    ``one_hit``: also listen to spans' one-hit span probes (off by default: a tracer on the start and
    end probes). Their hits are {"probe": name, "span": span_payload(...)}.
    """

    def __init__(self, provider, one_hit=False):
        self.hits = []
        self._lock = threading.Lock()
        self.provider = provider
        for probe in provider.probes.values():
            if probe.role == ROLE_SPAN and not one_hit:
                continue
            probe.attach_site(Semaphore(1), self._site(probe))

    def _site(self, probe):
        if probe.role == ROLE_SPAN:
            return self._span_site(probe)
        names = [a.name for a in probe.args]
        types = [a.type.value for a in probe.args]

        def site(*args):
            hit = {"probe": probe.name}
            hit.update(zip(names, map(_decode, types, args)))
            with self._lock:
                self.hits.append(hit)

        return site

    def _span_site(self, probe):
        entry = next(e for e in self.provider.schema_spans if e.get("span") == probe.name)
        start, end = self.provider.probes[entry["start"]], self.provider.probes[entry["end"]]

        def site(value):
            hit = {"probe": probe.name, "span": span_payload(start, end, _decode("bytes", value))}
            with self._lock:
                self.hits.append(hit)

        return site

    def set_enabled(self, enabled, one_hit=False):
        for probe in self.provider.probes.values():
            if probe.role != ROLE_SPAN or one_hit:
                probe.enabled.value = 1 if enabled else 0

    def of(self, probe_name):
        return [h for h in self.hits if h["probe"] == probe_name]

    def clear(self):
        self.hits.clear()


def raise_semaphore(probe):
    """Pretend a tracer attached to a loaded probe: raise its semaphore by one, as one would."""
    ctypes.c_uint16.from_address(ctypes.addressof(probe.enabled)).value += 1
