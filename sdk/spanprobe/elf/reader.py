"""Read SDT notes and the spanprobe schema back out of an ELF file.

Used by the tracer on files from other processes, so the input is untrusted:
every offset and size is bounds-checked and any inconsistency raises
ElfError rather than an IndexError or a struct.error.
"""

import struct
from dataclasses import dataclass
from typing import List, Optional, Tuple

from .writer import NT_SPANPROBE_SCHEMA, NT_STAPSDT, SCHEMA_NOTE_NAME, STAPSDT_NOTE_NAME

SHT_NOTE = 7
MAX_SECTIONS = 4096


class ElfError(ValueError):
    """The bytes are not an ELF file this reader can use."""


@dataclass(frozen=True)
class SdtNote:
    """One SDT probe location as its note describes it (link-time addresses)."""

    provider: str
    name: str
    pc: int
    base: int
    semaphore: int
    args: str


@dataclass(frozen=True)
class ElfInfo:
    machine: int
    sdt_notes: List[SdtNote]
    schema: Optional[bytes]
    stapsdt_base: Optional[int]


def _unpack(fmt, data, offset):
    size = struct.calcsize(fmt)
    if offset < 0 or offset + size > len(data):
        raise ElfError(f"truncated ELF: {size} bytes wanted at offset {offset}")
    return struct.unpack_from(fmt, data, offset)


def c_string(data, start: int, end: Optional[int] = None) -> Tuple[str, int]:
    """The NUL-terminated UTF-8 string at ``start`` (ending before ``end``) and the offset after it."""
    nul = data.find(b"\0", start, end)
    if nul < 0:
        raise ElfError("unterminated string in SDT note")
    try:
        return data[start:nul].decode("utf-8"), nul + 1
    except UnicodeDecodeError:
        raise ElfError("SDT note string is not UTF-8") from None


def iter_notes(data, offset, size):
    """Yield (name, type, desc) for each note in a note section."""
    end = offset + size
    if end > len(data):
        raise ElfError("note section extends past the end of the file")
    pos = offset
    while pos + 12 <= end:
        namesz, descsz, ntype = _unpack("<III", data, pos)
        name_start = pos + 12
        desc_start = name_start + ((namesz + 3) & ~3)
        desc_end = desc_start + descsz
        if desc_end > end:
            raise ElfError("note extends past its section")
        yield data[name_start:name_start + namesz].rstrip(b"\0"), ntype, data[desc_start:desc_end]
        pos = desc_start + ((descsz + 3) & ~3)


def parse_sdt(desc, args_optional: bool = False) -> SdtNote:
    """Decode an NT_STAPSDT descriptor.

    ``args_optional``: a descriptor that ends right after the probe name gets an
    empty argument spec instead of being refused. The tracer reads notes that
    any toolchain wrote into any library a process maps, and tolerates that;
    provider objects from the SDK always carry the spec.
    """
    if len(desc) < 24:
        raise ElfError("SDT note descriptor too short")
    pc, base, sem = struct.unpack_from("<QQQ", desc, 0)
    provider, pos = c_string(desc, 24)
    name, pos = c_string(desc, pos)
    args, _ = ("", pos) if args_optional and pos >= len(desc) else c_string(desc, pos)
    return SdtNote(provider, name, pc, base, sem, args)


class ProbeNotes:
    """The SDT notes and the spanprobe schema gathered from a file's note sections.

    Both ELF readers (this one and the tracer's seeking one) find note sections
    their own way; what a note means is decided here, once.
    """

    def __init__(self, args_optional: bool = False):
        self.notes: List[SdtNote] = []
        self.schema: Optional[bytes] = None
        self._args_optional = args_optional

    def add_section(self, data, offset: int, size: int) -> None:
        """Take the notes of the note section at ``offset`` of ``data``."""
        for owner, ntype, desc in iter_notes(data, offset, size):
            if owner == STAPSDT_NOTE_NAME and ntype == NT_STAPSDT:
                self.notes.append(parse_sdt(desc, self._args_optional))
            elif owner == SCHEMA_NOTE_NAME and ntype == NT_SPANPROBE_SCHEMA:
                if self.schema is not None:
                    raise ElfError("more than one spanprobe schema note")
                self.schema = desc


def read_elf(data: bytes) -> ElfInfo:
    """Parse a 64-bit little-endian ELF's SDT notes, schema and .stapsdt.base."""
    if data[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    ei_class, ei_data = _unpack("<BB", data, 4)
    if ei_class != 2 or ei_data != 1:
        raise ElfError("only 64-bit little-endian ELF files are supported")
    (machine,) = _unpack("<H", data, 18)
    (shoff,) = _unpack("<Q", data, 40)
    shentsize, shnum, shstrndx = _unpack("<HHH", data, 58)
    if shnum > MAX_SECTIONS or (shnum and shentsize < 64):
        raise ElfError("implausible section header table")
    sections = [_unpack("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    if shnum and shstrndx >= shnum:
        raise ElfError("section name table index out of range")
    strtab = sections[shstrndx] if shnum else None

    def section_name(sh):
        start = strtab[4] + sh[0]
        return c_string(data, start, min(len(data), strtab[4] + strtab[5]))[0]

    found, base = ProbeNotes(), None
    for sh in sections[1:]:
        name, stype, offset, size = section_name(sh), sh[1], sh[4], sh[5]
        if name == ".stapsdt.base":
            base = sh[3]
        if stype == SHT_NOTE:
            found.add_section(data, offset, size)
    return ElfInfo(machine, found.notes, found.schema, base)
