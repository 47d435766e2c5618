"""A whole span in one probe hit: the ``<base>__span`` probe's emitter.

A uprobe hit costs the application ~0.7 µs here, and the start/end pair
makes two a span. The span probe (role ``span``, docs/abi.md "One-hit span
probe") is fired once, when a span that began traced ends, with one bytes
value: the start time the SDK read at begin, every argument the start probe
would have carried and every argument the end probe would carry, packed by
one precompiled ``struct`` in the layout spanprobe.abi.protocol states
(``payload_format``). str attributes travel inline, cut at the payload's
bound (struct's ``s`` code cuts and pads), so the tracer's handler reads them
with the payload's one read; the error strings (NULL unless the span failed)
and bytes values as the addresses of the bytes objects the probe would have
pointed at.

Like the start and end emitters (definition.emitter), the plain attribute
values convert inline; anything else goes to a slow path that records
conversion failures in the flags words and never raises.
"""

import ctypes
import logging
import struct

from ..abi.protocol import END_ARGS, FLAG_CONVERSION_FAILED, START_ARGS, payload_format
from ..abi.types import ArgType
from ..probes.convert import converter
from ..probes.firing import comma_each, compile_factory, fast_path

log = logging.getLogger("spanprobe")
_SAMPLE = b"spanprobe"
#: A bytes object's data is this far from its id(): the address ctypes passes for it as ``char *``
#: (CPython's PyBytesObject layout, measured here rather than assumed).
BYTES_DATA = ctypes.cast(_SAMPLE, ctypes.c_void_p).value - id(_SAMPLE)
_F64 = struct.Struct("<d")
_U64 = struct.Struct("<Q")
#: What an attribute that could not be converted carries: its type's zero value (docs/abi.md "flags").
ZERO = {ArgType.STR: "", ArgType.BYTES: b"", ArgType.F64: 0.0, ArgType.BOOL: False}


def plain(value):
    """``value`` as an exact builtin type, without running any of its methods; TypeError if impossible."""
    if isinstance(value, str):
        return str.__str__(value)      # str subclasses (StrEnum) by their characters
    if isinstance(value, int):
        return int.__int__(value)      # IntEnum, bool stay numbers
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(memoryview(value))
    raise TypeError(type(value).__name__)


def address(value):
    """The address a probe site would receive for ``value`` (bytes; None is NULL)."""
    return 0 if value is None else id(value) + BYTES_DATA


def _word(arg_type, converted):
    """A converted argument (what the careful converters return) as its payload word."""
    if arg_type is ArgType.STR:  # the value is in its slot after the words
        return 0
    if isinstance(converted, bytes):  # a bytes value's header and data
        return address(converted)
    value = getattr(converted, "value", converted)  # c_int64 / c_uint64
    if arg_type is ArgType.F64:
        return _F64.unpack(_U64.pack(value))[0]
    return int(value)


def _fast(i, param, arg_type):
    """(precheck, condition, word expression, setup) of one attribute's inline path, or None (bytes):
    the probes' own fast path (firing.fast_path), packed as the value itself. A str's word is 0, its
    value (``_sp_b<i>``) goes into its slot."""
    shape = fast_path(i, param, arg_type)
    if shape is None:
        return None
    condition, _, setup = shape
    if arg_type is ArgType.STR:
        return f"type({param}) is str", condition, "0", setup
    return None, condition, param, setup


def _strs(slots):
    """The str values among the attributes' slots (None: not a str), in order: the payload's str slots."""
    return [v for v in slots if v is not None]


def span_emitter(one, start, end):
    """``one(t0, span, parent, trace_high, trace_low, flags, status, error_type, error_message,
    *start_values, *end_values)`` for the span probe ``one`` of a span whose start and end probes are
    ``start`` and ``end``: fires it once and never raises. Ids are ints, error strings bytes or None;
    the values are values (a block's lazy ones were called before: definition.resolved).
    A span it cannot fire (an SDK bug, which the call never sees) is counted in ``one.conversion_failures``."""
    attrs = start.args[len(START_ARGS):] + end.args[len(END_ARGS):]
    n_start = len(start.args) - len(START_ARGS)
    types = [a.type for a in start.args] + [a.type for a in end.args]
    data = payload_format(types[:len(start.args)], types[len(start.args):])
    pack = struct.Struct("<I" + data[1:]).pack  # the bytes header (the data's length), then the data
    size = struct.calcsize(data)
    checks = tuple(converter(a.type, f"probe {one.qualname} attribute {a.name!r}") for a in attrs)
    zeros = tuple(check(ZERO.get(a.type, 0)) for a, check in zip(attrs, checks))
    site_cell = one.site_cell  # load() and unload() repoint it: read it at each call

    def slow(t0, ids, status, error_type, error_message, values):
        try:
            words, slots, failed = [], [], [0, 0]
            keep = []  # the objects whose addresses are words: alive until the probe site returns
            for i, (v, check, zero, a) in enumerate(zip(values, checks, zeros, attrs)):
                try:
                    converted = check(plain(v))
                except Exception:
                    converted = zero
                    at = i if i < n_start else i - n_start
                    failed[i >= n_start] |= 1 << (FLAG_CONVERSION_FAILED + at)
                keep.append(converted)
                words.append(_word(a.type, converted))
                slots.append(converted if a.type is ArgType.STR else None)
            span, parent, high, low, flags = ids
            site_cell.cell_contents(pack(size, 0, t0, span, parent, high, low, flags | failed[0], *words[:n_start],
                                         span, status, address(error_type), address(error_message), failed[1],
                                         *words[n_start:], *_strs(slots)))
        except Exception:  # an SDK bug must not reach the application: the span is dropped, counted
            one.conversion_failures += 1
            if one.conversion_failures == 1:
                log.warning("spanprobe: could not fire span probe %s (span dropped; later ones counted in its "
                            "conversion_failures, not logged)", one.qualname, exc_info=True)

    params = [f"a{i}" for i in range(len(attrs))]
    fast = [_fast(i, p, a.type) for i, (p, a) in enumerate(zip(params, attrs))]
    head = "t0, x, px, hx, lx, fl, st, et, em"
    lines = [f"def one({head}, {comma_each(params)}):"]
    if all(f is not None for f in fast):
        words = [f[2] for f in fast]
        strs = [f"_sp_b{i}" if a.type is ArgType.STR else None for i, a in enumerate(attrs)]
        call = (f"_sp_cell.cell_contents(_sp_pack({size}, 0, t0, x, px, hx, lx, fl, {comma_each(words[:n_start])}"
                "x, st, 0 if et is None else _sp_id(et) + _sp_OFF, 0 if em is None else _sp_id(em) + _sp_OFF, 0, "
                f"{comma_each(words[n_start:])}{comma_each(_strs(strs))}))")
        prechecks = [f[0] for f in fast if f[0]]
        lines += ["    try:",
                  f"        if {' and '.join(prechecks) or 'True'}:",
                  *(f"            {line}" for f in fast for line in f[3]),
                  f"            if {' and '.join(f[1] for f in fast) or 'True'}:",
                  f"                return {call}",
                  "    except Exception:",
                  "        pass"]
    lines.append(f"    _sp_slow(t0, (x, px, hx, lx, fl), st, et, em, ({comma_each(params)}))")
    namespace = {"_sp_cell": site_cell, "_sp_slow": slow, "_sp_pack": pack, "_sp_id": id, "_sp_OFF": BYTES_DATA}
    source = "def _sp_factory():\n" + "".join(f"    {line}\n" for line in lines) + "    return one\n"
    return compile_factory(one.qualname, source, namespace)()
