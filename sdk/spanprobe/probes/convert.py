"""Python values to what a probe site receives, checked.

These are the careful converters: they accept every value the documentation
allows (int subclasses and ``__index__`` objects, lazy callables, bytes-like
objects), reject everything else with a ProbeArgumentError that names the
probe and the argument, and return values ready for a ctypes call made
without ``argtypes`` (bytes become ``char *``, small ints ``int``, 64-bit
words ``c_int64``/``c_uint64``). The generated fast path in firing.py handles
the plain cases inline and falls back to these for the rest.

A zero-argument callable is a lazy value: it is called here, so expensive
arguments are computed only when someone is listening.
"""

import ctypes
import operator
import struct

from ..abi.protocol import BYTES_TRUNCATED, MAX_BYTES
from ..abi.types import ArgType
from ..errors import ProbeArgumentError

_double = struct.Struct("<d")
_u64 = struct.Struct("<Q")


def f64_bits(value):
    """The IEEE-754 bit pattern of a float as an unsigned 64-bit int."""
    return _u64.unpack(_double.pack(value))[0]


def bytes_arg(value):
    """A bytes argument as passed: little-endian u32 length (bit 31: truncated), then the data."""
    raw = value if isinstance(value, bytes) else bytes(value)
    data = raw[:MAX_BYTES]
    header = len(data) | (BYTES_TRUNCATED if len(raw) > MAX_BYTES else 0)
    return header.to_bytes(4, "little") + data


def _describe(v):
    text = repr(v)
    return f"{type(v).__name__} {text}" if len(text) < 60 else type(v).__name__


def converter(arg_type: ArgType, where: str):
    """A checked converter for one argument; ``where`` prefixes its error messages."""

    def fail(message):
        raise ProbeArgumentError(f"{where}: {message}")

    def lazy_or_fail(v, expected):
        if callable(v):
            return convert(v())
        fail(f"expected {expected}, got {_describe(v)}")

    if arg_type.is_integer:
        lo, hi = arg_type.range
        wrap = {8: ctypes.c_int64 if arg_type.signed else ctypes.c_uint64}.get(arg_type.size)

        def convert(v):
            if isinstance(v, bool) or not isinstance(v, int):
                if isinstance(v, bool):
                    v = int(v)
                elif hasattr(type(v), "__index__"):
                    v = operator.index(v)
                else:
                    return lazy_or_fail(v, f"an int for {arg_type.value}")
            if not lo <= v <= hi:
                fail(f"{v} is out of range for {arg_type.value} [{lo}, {hi}]")
            return wrap(v) if wrap else int(v)

    elif arg_type is ArgType.BOOL:

        def convert(v):
            if isinstance(v, int):  # bool is an int
                return 1 if v else 0
            return lazy_or_fail(v, "a bool")

    elif arg_type is ArgType.F64:

        def convert(v):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                try:
                    return ctypes.c_uint64(f64_bits(float(v)))
                except OverflowError:
                    fail(f"{v} does not fit a 64-bit float")
            return lazy_or_fail(v, "a float")

    elif arg_type is ArgType.STR:

        def convert(v):
            if not isinstance(v, str):
                return lazy_or_fail(v, "a str")
            try:
                data = v.encode()
            except UnicodeEncodeError as exc:
                fail(f"str is not valid Unicode at index {exc.start} "
                     f"(lone surrogate {v[exc.start]!r}); it cannot be encoded as UTF-8")
            if 0 in data:
                fail(f"str contains a NUL character at index {v.index(chr(0))}; "
                     "probe strings are C strings and would end there")
            return data

    elif arg_type is ArgType.BYTES:

        def convert(v):
            if isinstance(v, (bytes, bytearray, memoryview)):
                return bytes_arg(v)
            return lazy_or_fail(v, "bytes, bytearray or memoryview")

    else:  # pragma: no cover - ArgType is closed
        raise AssertionError(arg_type)
    return convert
