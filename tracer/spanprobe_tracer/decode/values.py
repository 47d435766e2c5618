"""Argument values out of a record: integers masked and sign-extended, floats, text, bytes.

Each argument's decoder is chosen once, from its type and layout (an
ArgField), and then turns the argument's word (and slot) in every record into
a value ready to be an OpenTelemetry attribute value. Values the probe could
not deliver are noted, never invented: cut at the capture length
(truncated), not converted by the application (its flags bit), not readable
from the process's memory (its fail bit).
"""

from __future__ import annotations

import struct
from typing import Optional, Sequence, Tuple

from spanprobe.abi.protocol import BYTES_TRUNCATED
from spanprobe.abi.types import ArgType

from ..kernel.layout import ArgField
from .records import ValueNotes

INT_TYPES = {t.value: (t.size, t.signed) for t in ArgType if t.is_integer}
INT64_MAX = (1 << 63) - 1

_F64 = struct.Struct("<d")
_U64 = struct.Struct("<Q")


def _text(data: bytes, limit: int) -> Tuple[str, bool]:
    """Decode captured UTF-8, cutting at ``limit`` bytes without splitting a character."""
    truncated = len(data) > limit
    if truncated:
        data = data[:limit]
        # Drop a partial multi-byte character the cut left at the end.
        for back in range(1, min(4, len(data)) + 1):
            b = data[-back]
            if b & 0xC0 != 0x80:  # a lead byte (or ASCII)
                need = 1 if b < 0x80 else 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4
                if need > back:
                    data = data[:-back]
                break
    return data.decode("utf-8", "replace"), truncated


def value_decoder(f: ArgField, string_max: int):
    """A function (record bytes, word) -> (value, truncated).

    Values come out ready to be OpenTelemetry attribute values: a u64 above
    2**63-1, which OTLP's signed integers cannot carry, is its decimal string.
    """
    if f.type in INT_TYPES:
        size, signed = INT_TYPES[f.type]
        bits = 8 * min(size, f.loc.size)
        mask = (1 << bits) - 1
        sign = 1 << (bits - 1)
        if signed:
            return lambda rec, w: (((w & mask) ^ sign) - sign, False)
        if bits == 64:
            return lambda rec, w: (w if w <= INT64_MAX else str(w), False)
        return lambda rec, w: (w & mask, False)
    if f.type == "bool":
        return lambda rec, w: (bool(w & 0xFF), False)
    if f.type == "f64":
        return lambda rec, w: (_F64.unpack(_U64.pack(w))[0], False)
    if f.type == "str":
        start, end = f.slot, f.slot + f.slot_size

        def text(rec, w):
            nul = rec.find(b"\0", start, end)
            if 0 <= nul - start <= string_max:  # the common case: whole and short
                return rec[start:nul].decode("utf-8", "replace"), False
            return _text(rec[start:nul if nul >= 0 else end], string_max)
        return text
    if f.type == "bytes":
        start, limit = f.slot, f.slot_size  # the capture bound of its role, or string_max

        def data(rec, w):
            length = w & (BYTES_TRUNCATED - 1)
            sdk_cut = bool(w & BYTES_TRUNCATED)
            n = min(length, limit)
            return bytes(rec[start:start + n]), sdk_cut or length > limit
        return data
    raise ValueError("unknown argument type %r" % f.type)


class AttrDecoder:
    """Decodes the attribute arguments (after the protocol's fixed ones) of one probe.

    ``words`` handed to ``decode`` hold the probe's argument words from
    position ``base`` on (a record's whole unpacked fields, not sliced)."""

    def __init__(self, fields: Sequence[ArgField], names: Sequence[str], first_attr: int, string_max: int,
                 base: int = 0):
        self.items = [(base + f.index, f.index, f.index - first_attr, name, value_decoder(f, string_max))
                      for f, name in zip(fields[first_attr:], names[first_attr:])]

    def decode(self, rec: bytes, words: Sequence[int], fail: int, conv_flags: int, attrs: dict,
               notes: Optional[ValueNotes]) -> Optional[ValueNotes]:
        for at, index, attr_index, name, dec in self.items:
            if conv_flags >> attr_index & 1:
                notes = notes or ValueNotes([], [], [])
                notes.conversion_failed.append(name)
                continue
            if fail >> index & 1:
                notes = notes or ValueNotes([], [], [])
                notes.read_failed.append(name)
                continue
            value, cut = dec(rec, words[at])
            attrs[name] = value
            if cut:
                notes = notes or ValueNotes([], [], [])
                notes.truncated.append(name)
        return notes
