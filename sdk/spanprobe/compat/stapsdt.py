"""The python-stapsdt API on top of spanprobe.

Code written for libstapsdt's Python binding runs unchanged but for its
import line (``from spanprobe.compat import stapsdt``), without libstapsdt, libelf
or a C compiler. As in libstapsdt, arguments are untyped machine words: an
8-byte argument may be given an int or a str/bytes, which is passed as a
``char *`` (that is how the seed's ``file_transfer`` probe passes the client
address and the path).

Differences, all deliberate: ``load()`` and ``unload()`` return True on
success (python-stapsdt returned the C status code's truth value, False on
success); a wrong argument count or type raises instead of being passed to a
C varargs call; probes have semaphores, so ``is_enabled`` is exact.
"""

import ctypes
import enum

from ..abi.protocol import ROLE_PLAIN
from ..abi.types import Arg, ArgType
from ..errors import ProbeArgumentError
from ..probes.convert import converter
from ..probes.provider import ProbeProvider

__all__ = ["ArgTypes", "Probe", "Provider"]


class ArgTypes(enum.IntEnum):
    """libstapsdt's argument types: the value is the SDT size, negative when signed."""

    noarg = 0
    uint8 = 1
    int8 = -1
    uint16 = 2
    int16 = -2
    uint32 = 4
    int32 = -4
    uint64 = 8
    int64 = -8


_TYPES = {
    ArgTypes.uint8: ArgType.U8, ArgTypes.int8: ArgType.I8,
    ArgTypes.uint16: ArgType.U16, ArgTypes.int16: ArgType.I16,
    ArgTypes.uint32: ArgType.U32, ArgTypes.int32: ArgType.I32,
    ArgTypes.uint64: ArgType.U64, ArgTypes.int64: ArgType.I64,
}


def _word_converter(arg_type, where):
    """An 8-byte argument: an int, or a str/bytes passed by address as in libstapsdt."""
    lo, hi = arg_type.range
    wrap = ctypes.c_int64 if arg_type.signed else ctypes.c_uint64

    def convert(value):
        if isinstance(value, str):
            value = value.encode()
        if isinstance(value, bytes):
            if 0 in value:
                raise ProbeArgumentError(f"{where}: string contains a NUL byte")
            return value
        if isinstance(value, int) and lo <= value <= hi:
            return wrap(value)
        raise ProbeArgumentError(
            f"{where}: expected an int in [{lo}, {hi}] or a str/bytes, "
            f"got {type(value).__name__} {value!r}")

    return convert


class Probe:
    """A probe with python-stapsdt's interface."""

    def __init__(self, probe):
        self._probe = probe
        self.name = probe.name

    def fire(self, *args):
        """Fire if a tracer is attached; returns whether it fired."""
        if not self._probe.enabled:
            return False
        self._probe.emit(*args)
        return True

    @property
    def is_enabled(self):
        return bool(self._probe.enabled)


class Provider:
    """A provider with python-stapsdt's interface."""

    def __init__(self, name):
        self._provider = ProbeProvider(name)
        self.name = name
        self._probes = []

    def __str__(self):
        return self.name

    def add_probe(self, name, *arg_types):
        args, converters = [], []
        for i, t in enumerate(arg_types):
            if t == ArgTypes.noarg:
                continue
            try:
                arg_type = _TYPES[ArgTypes(t)]
            except ValueError:
                raise TypeError(f"{t!r} is not a stapsdt.ArgTypes value") from None
            where = f"probe {self.name}:{name} argument {i}"
            args.append(Arg(f"arg{i}", arg_type))
            converters.append(_word_converter(arg_type, where) if arg_type.size == 8
                              else converter(arg_type, where))
        probe = Probe(self._provider.declare(name, args, ROLE_PLAIN, converters))
        self._probes.append(probe)
        return probe

    def load(self):
        self._provider.load()
        return True

    def unload(self):
        self._provider.unload()
        return True
