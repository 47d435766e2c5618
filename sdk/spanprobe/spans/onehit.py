"""A whole span in one probe hit: the ``<base>__span`` probe's emitter.

A uprobe hit costs the application ~0.7 µs here, and the start/end pair
makes two a span. The span probe (role ``span``, docs/abi.md "One-hit span
probe") is fired once, when a span that began traced ends, with one bytes
value: the start time the SDK read at begin, every argument the start probe
would have carried and every argument the end probe would carry, packed by
a precompiled ``struct`` in the layout spanprobe.abi.protocol states
(``payload_format``). str attributes travel inline, cut at the payload's
bound (struct's ``s`` code cuts and pads), so the tracer's handler reads them
with the payload's one read; the error strings (NULL unless the span failed)
and bytes values as the addresses of the bytes objects the probe would have
pointed at.

Like the start and end emitters (definition.emitter), the plain attribute
values convert inline; anything else goes to a slow path that records
conversion failures in the flags words and never raises. The span's
generated code inlines those statements (SpanProbeCode.source) rather than
calling an emitter, and packs with a struct whose pad bytes stand for the
fields that are zero on that path: fewer arguments to convert.
"""

import ctypes
import logging
import struct

from ..abi.protocol import END_ARGS, FLAG_CONVERSION_FAILED, START_ARGS, payload_fields, payload_format
from ..abi.types import ArgType
from ..probes.convert import converter
from ..probes.firing import comma_each, compile_factory, fast_path, indent

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


#: A field the fast path knows is zero (not an expression): packed as pad bytes, no argument.
ZERO_WORD = object()


def _fast(i, param, arg_type):
    """(precheck, condition, word expression, setup) of one attribute's inline path, or None (bytes):
    the probes' own fast path (firing.fast_path), packed as the value itself. A str's word is ZERO_WORD
    (0, a pad byte run), its value (``_sp_b<i>``) goes into its slot."""
    shape = fast_path(i, param, arg_type)
    if shape is None:
        return None
    condition, _, setup = shape
    if arg_type is ArgType.STR:
        return f"type({param}) is str", condition, ZERO_WORD, setup
    return None, condition, param, setup


def _strs(slots):
    """The str values among the attributes' slots (None: not a str), in order: the payload's str slots."""
    return [v for v in slots if v is not None]


class SpanProbeCode:
    """How the span probe ``one`` of a span whose start and end probes are ``start`` and ``end`` fires:
    ``source()``, statements that fire it once and never raise, which the span's generated code inlines
    (no Python call: ~80 ns a span), and ``emit``, the same statements as a function
    ``emit(t0, span, parent, trace_high, trace_low, flags, status, error_type, error_message, *start_values,
    *end_values)`` for callers that have the values at hand. Ids are ints, error strings bytes or None;
    the values are values (a block's lazy ones were called before: definition.resolved). ``names``: what
    the statements need in their namespace. A span it cannot fire (an SDK bug, which the caller never
    sees) is counted in ``one.conversion_failures``."""

    def __init__(self, one, start, end):
        self.attrs = attrs = start.args[len(START_ARGS):] + end.args[len(END_ARGS):]
        self.n_start = n_start = len(start.args) - len(START_ARGS)
        types = [a.type for a in start.args], [a.type for a in end.args]
        self.fields = payload_fields(*types)
        self.size = struct.calcsize(payload_format(*types))
        pack = struct.Struct("<I" + "".join(self.fields)).pack  # the bytes header (the data's length), then the data
        size = self.size
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
                site_cell.cell_contents(pack(size, 0, t0, span, parent, high, low, flags | failed[0],
                                             *words[:n_start], span, status, address(error_type),
                                             address(error_message), failed[1], *words[n_start:], *_strs(slots)))
            except Exception:  # an SDK bug must not reach the application: the span is dropped, counted
                one.conversion_failures += 1
                if one.conversion_failures == 1:
                    log.warning("spanprobe: could not fire span probe %s (span dropped; later ones counted in "
                                "its conversion_failures, not logged)", one.qualname, exc_info=True)

        self.names = {"_sp_o_cell": site_cell, "_sp_o_slow": slow, "_sp_o_id": id, "_sp_o_OFF": BYTES_DATA}
        params = [f"a{i}" for i in range(len(attrs))]
        if self._fast(params) is not None:
            for et in ("None", "et"):  # the fast path's two structs: a span that ended ok (no error type), any
                fmt, _ = self._fast_payload("t0", ("x",) * 5, "st", et, "em", params)
                self.names[self._pack_name(et)] = struct.Struct(fmt).pack
        head = "t0, x, px, hx, lx, fl, st, et, em"
        source = (f"def _sp_factory():\n    def one({head}, {comma_each(params)}):\n"
                  + indent(self.source("t0", ("x", "px", "hx", "lx", "fl"), "st", "et", "em", params), 8)
                  + "    return one\n")
        self.emit = compile_factory(one.qualname, source, dict(self.names))()

    @staticmethod
    def _pack_name(et):
        return "_sp_o_pack_ok" if et == "None" else "_sp_o_pack"

    def _fast(self, values):
        """Each attribute's inline path (_fast) for the value names ``values``; None if one has none."""
        fast = [_fast(i, v, a.type) for i, (v, a) in enumerate(zip(values, self.attrs))]
        return None if any(f is None for f in fast) else fast

    def _fast_payload(self, t0, ids, st, et, em, values):
        """(the fast path's struct format, the expressions it packs) for these names: the payload of
        payload_fields, its fields known to be zero there (the reserved u32, a str attribute's word, the end
        flags, a literal None error type) as pad bytes, which struct writes as zeros without an argument."""
        words = [f[2] for f in self._fast(values)]
        strs = [f"_sp_b{i}" for i, a in enumerate(self.attrs) if a.type is ArgType.STR]
        x = ids[0]

        def address_of(e):
            return ZERO_WORD if e == "None" else f"0 if {e} is None else _sp_o_id({e}) + _sp_o_OFF"
        exprs = [ZERO_WORD, t0, *ids, *words[:self.n_start], x, st, address_of(et), address_of(em), ZERO_WORD,
                 *words[self.n_start:], *strs]
        fmt = "<I" + "".join(f"{struct.calcsize(c)}x" if e is ZERO_WORD else c for c, e in zip(self.fields, exprs))
        return fmt, [str(self.size)] + [e for e in exprs if e is not ZERO_WORD]

    def source(self, t0, ids, st, et, em, values):
        """Statements firing the span probe, never raising, for these expressions: the start time ``t0``,
        the ids ``ids`` (span, parent, trace high, trace low, flags), the status ``st``, the error strings
        ``et`` and ``em`` (bytes or None; "None" for a span that ended ok) and the attribute values
        ``values`` (names: each is read more than once). The plain values convert inline (the probes' own
        fast path, firing.fast_path); anything else takes the slow path, which records conversion failures
        in the flags words."""
        slow = f"_sp_o_slow({t0}, ({comma_each(ids)}), {st}, {et}, {em}, ({comma_each(values)}))"
        fast = self._fast(values)
        if fast is None:
            return slow + "\n"
        _, args = self._fast_payload(t0, ids, st, et, em, values)
        prechecks = [f[0] for f in fast if f[0]]
        lines = ["_sp_o_sent = 0",
                 "try:",
                 f"    if {' and '.join(prechecks) or 'True'}:",
                 *(f"        {line}" for f in fast for line in f[3]),
                 f"        if {' and '.join(f[1] for f in fast) or 'True'}:",
                 f"            _sp_o_cell.cell_contents({self._pack_name(et)}({', '.join(args)}))",
                 "            _sp_o_sent = 1",
                 "except Exception:",
                 "    pass",
                 "if not _sp_o_sent:",
                 f"    {slow}"]
        return "".join(f"{line}\n" for line in lines)

