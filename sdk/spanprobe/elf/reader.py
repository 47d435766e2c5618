"""Read SDT notes, the spanprobe schema and the loadable segments out of an ELF file.

The tracer reads every library a process maps (provider objects of a few KiB,
and libc or libpython, tens of MiB, for plain USDT probes), so this reader
seeks: the ELF header, the program and section headers and the note
sections, nothing else. Input is untrusted (any file a traced process maps):
every offset and size is bounds-checked, sizes are capped, and any
inconsistency raises ElfError rather than an IndexError or a struct.error.

It also answers the question the SDT notes leave open: where a virtual
address is in the *file*, which is what the kernel's uprobe interface wants
for both the probe site and its semaphore (``ref_ctr_offset``).
"""

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO, List, Optional, Tuple

from .format import (EHDR_SIZE, NT_SPANPROBE_SCHEMA, NT_STAPSDT, PHDR_SIZE, PT_LOAD, SCHEMA_NOTE_NAME,
                     SCHEMA_NOTE_SECTION, SDT_BASE_SECTION, SDT_NOTE_SECTION, SHDR_SIZE, SHT_NOTE,
                     STAPSDT_NOTE_NAME)

MAX_SECTIONS = 65535
MAX_PHDRS = 4096
#: A note section larger than this is not read (no real one comes close).
MAX_NOTE_SECTION = 16 << 20
#: No file is larger (offsets and sizes in the headers are u64).
MAX_FILE_SIZE = 1 << 62


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
class LoadSegment:
    offset: int
    vaddr: int
    filesz: int
    flags: int


@dataclass(frozen=True)
class ElfProbes:
    """What a tracer needs from one ELF file."""

    machine: int
    notes: List[SdtNote]
    schema: Optional[bytes]
    stapsdt_base: Optional[int]
    segments: List[LoadSegment]

    def file_offset(self, vaddr: int) -> int:
        """The file offset of a link-time virtual address (raises ElfError if unmapped)."""
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return vaddr - seg.vaddr + seg.offset
        raise ElfError("address %#x is in no loadable segment of the file" % vaddr)

    def probe_pc(self, note: SdtNote) -> int:
        """The probe's link-time address, corrected as SystemTap specifies.

        If the file was prelinked (or otherwise moved) after the notes were
        written, ``.stapsdt.base`` moved with it while the note kept the old
        base: the difference applies to the pc.
        """
        if self.stapsdt_base is not None and note.base:
            return note.pc + (self.stapsdt_base - note.base)
        return note.pc


def c_string(data, start: int, end: Optional[int] = None) -> Tuple[str, int]:
    """The NUL-terminated UTF-8 string at ``start`` (ending before ``end``) and the offset after it."""
    nul = data.find(b"\0", start, end)
    if nul < 0:
        raise ElfError("unterminated string in SDT note")
    try:
        return data[start:nul].decode("utf-8"), nul + 1
    except UnicodeDecodeError:
        raise ElfError("SDT note string is not UTF-8") from None


def iter_notes(data):
    """Yield (owner, type, descriptor) for each note of a note section's bytes."""
    pos, end = 0, len(data)
    while pos + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        name_start = pos + 12
        desc_start = name_start + ((namesz + 3) & ~3)
        desc_end = desc_start + descsz
        if desc_end > end:
            raise ElfError("note extends past its section")
        yield data[name_start:name_start + namesz].rstrip(b"\0"), ntype, data[desc_start:desc_end]
        pos = desc_start + ((descsz + 3) & ~3)


def parse_sdt(desc) -> SdtNote:
    """Decode an NT_STAPSDT descriptor.

    A descriptor that ends right after the probe name gets an empty argument
    spec: notes that any toolchain wrote into any library a process maps are
    read, and some leave it out (provider objects from the SDK always carry it).
    """
    if len(desc) < 24:
        raise ElfError("SDT note descriptor too short")
    pc, base, sem = struct.unpack_from("<QQQ", desc, 0)
    provider, pos = c_string(desc, 24)
    name, pos = c_string(desc, pos)
    args, _ = ("", pos) if pos >= len(desc) else c_string(desc, pos)
    return SdtNote(provider, name, pc, base, sem, args)


def _read_at(f: BinaryIO, offset: int, size: int) -> bytes:
    if offset + size > MAX_FILE_SIZE:  # seek() would raise OverflowError, not say "truncated"
        raise ElfError("truncated ELF: %d bytes wanted at offset %d" % (size, offset))
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise ElfError("truncated ELF: %d bytes wanted at offset %d" % (size, offset))
    return data


def read_probes(f: BinaryIO) -> ElfProbes:
    """Read SDT notes, the spanprobe schema, .stapsdt.base and PT_LOADs from an open ELF file."""
    ident = _read_at(f, 0, EHDR_SIZE)
    if ident[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    if ident[4] != 2 or ident[5] != 1:
        raise ElfError("only 64-bit little-endian ELF files are supported")
    (machine,) = struct.unpack_from("<H", ident, 18)
    (phoff, shoff) = struct.unpack_from("<QQ", ident, 32)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", ident, 54)

    segments = []
    if phnum:
        if phnum > MAX_PHDRS or phentsize < PHDR_SIZE:
            raise ElfError("implausible program header table")
        table = _read_at(f, phoff, phnum * phentsize)
        for i in range(phnum):
            ptype, flags, offset, vaddr, _paddr, filesz = struct.unpack_from(
                "<IIQQQQ", table, i * phentsize)
            if ptype == PT_LOAD:
                segments.append(LoadSegment(offset, vaddr, filesz, flags))

    notes, schema, base = [], None, None
    if shnum:
        if shnum > MAX_SECTIONS or shentsize < SHDR_SIZE or shstrndx >= shnum:
            raise ElfError("implausible section header table")
        table = _read_at(f, shoff, shnum * shentsize)
        sections = [struct.unpack_from("<IIQQQQIIQQ", table, i * shentsize) for i in range(shnum)]
        strtab_sh = sections[shstrndx]
        if strtab_sh[5] > MAX_NOTE_SECTION:
            raise ElfError("implausible section name table")
        strtab = _read_at(f, strtab_sh[4], strtab_sh[5])
        for sh in sections[1:]:
            name, _ = c_string(strtab, sh[0]) if sh[0] < len(strtab) else ("", 0)
            stype, addr, offset, size = sh[1], sh[3], sh[4], sh[5]
            if name == SDT_BASE_SECTION:
                base = addr
            if stype != SHT_NOTE or name not in (SDT_NOTE_SECTION, SCHEMA_NOTE_SECTION):
                continue
            if size > MAX_NOTE_SECTION:
                raise ElfError("note section %s is implausibly large (%d bytes)" % (name, size))
            for owner, ntype, desc in iter_notes(_read_at(f, offset, size)):
                if owner == STAPSDT_NOTE_NAME and ntype == NT_STAPSDT:
                    notes.append(parse_sdt(desc))
                elif owner == SCHEMA_NOTE_NAME and ntype == NT_SPANPROBE_SCHEMA:
                    if schema is not None:
                        raise ElfError("more than one spanprobe schema note")
                    schema = desc
    return ElfProbes(machine, notes, schema, base, segments)


def read_elf(data: bytes) -> ElfProbes:
    """read_probes() of an ELF image held in memory (a provider's ``Image.data``)."""
    return read_probes(io.BytesIO(data))
