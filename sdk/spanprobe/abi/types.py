"""Argument types a probe can carry, and how each crosses the probe ABI.

Every argument occupies one machine word at the probe site. Integers travel
as themselves, sized and signed as declared; ``f64`` travels as its IEEE-754
bit pattern in an integer register (USDT argument specs cannot name floating
point registers portably, and the bits let a tracer recover the exact value,
-0.0 and NaN included); ``str`` and ``bytes`` travel as pointers.
"""

import enum
from dataclasses import dataclass


class ArgType(enum.Enum):
    """The type of one probe argument, named as in the schema."""

    I8 = "i8"
    I16 = "i16"
    I32 = "i32"
    I64 = "i64"
    U8 = "u8"
    U16 = "u16"
    U32 = "u32"
    U64 = "u64"
    BOOL = "bool"
    F64 = "f64"
    STR = "str"
    BYTES = "bytes"

    @property
    def size(self):
        """Bytes of the value as the argument spec describes it."""
        return _SIZES[self]

    @property
    def signed(self):
        return self in _SIGNED

    @property
    def is_integer(self):
        return self in _RANGES

    @property
    def range(self):
        """Inclusive (min, max) of an integer type."""
        return _RANGES[self]

    @classmethod
    def parse(cls, value):
        """Accept an ArgType, its schema name, or a Python type (int, str, ...)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        elif value in _PYTHON_TYPES:
            return _PYTHON_TYPES[value]
        names = ", ".join(t.value for t in cls)
        raise TypeError(
            f"{value!r} is not a probe argument type; use one of {names} "
            "or int, float, bool, str, bytes"
        )


_SIZES = {
    ArgType.I8: 1, ArgType.U8: 1, ArgType.BOOL: 1,
    ArgType.I16: 2, ArgType.U16: 2,
    ArgType.I32: 4, ArgType.U32: 4,
    ArgType.I64: 8, ArgType.U64: 8, ArgType.F64: 8,
    ArgType.STR: 8, ArgType.BYTES: 8,
}
_SIGNED = {ArgType.I8, ArgType.I16, ArgType.I32, ArgType.I64}
_RANGES = {
    t: ((-(1 << (8 * _SIZES[t] - 1)), (1 << (8 * _SIZES[t] - 1)) - 1)
        if t in _SIGNED else (0, (1 << (8 * _SIZES[t])) - 1))
    for t in (ArgType.I8, ArgType.I16, ArgType.I32, ArgType.I64,
              ArgType.U8, ArgType.U16, ArgType.U32, ArgType.U64)
}
_PYTHON_TYPES = {
    int: ArgType.I64,
    float: ArgType.F64,
    bool: ArgType.BOOL,
    str: ArgType.STR,
    bytes: ArgType.BYTES,
}

#: Arguments one USDT probe carries at most (SystemTap SDT, as bcc and bpftrace read it).
MAX_ARGS = 12


@dataclass(frozen=True)
class Arg:
    """One declared probe argument: its name (the schema's) and its type."""

    name: str
    type: ArgType
