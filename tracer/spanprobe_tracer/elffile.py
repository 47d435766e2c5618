"""Just enough ELF to find probes in a mapped file and to attach uprobes to them.

The SDK's reader (spanprobe.elf.reader) parses a whole image held in memory,
which suits provider objects (a few KiB). The tracer also looks at every other
library a process maps (libc, libpython: tens of MiB) for plain USDT probes,
so this reader seeks: it reads the ELF header, the program and section
headers and the note sections, nothing else. Input is untrusted (any file a
traced process maps): sizes are bounded and inconsistencies raise ElfError.

It also answers the question the SDT notes leave open: where a virtual address
is in the *file*, which is what the kernel's uprobe interface wants for both
the probe site and its semaphore (``ref_ctr_offset``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, List, Optional

from spanprobe.elf.reader import SHT_NOTE, ElfError, ProbeNotes, SdtNote, c_string

PT_LOAD = 1

MAX_SECTIONS = 65535
MAX_PHDRS = 4096
#: A note section larger than this is not read (no real one comes close).
MAX_NOTE_SECTION = 16 << 20
#: No file is larger (offsets and sizes in the headers are u64).
MAX_FILE_SIZE = 1 << 62

EM_X86_64 = 62
EM_AARCH64 = 183


@dataclass(frozen=True)
class LoadSegment:
    offset: int
    vaddr: int
    filesz: int
    flags: int


@dataclass(frozen=True)
class ElfProbes:
    """What the tracer needs from one ELF file."""

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
    ident = _read_at(f, 0, 64)
    if ident[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    if ident[4] != 2 or ident[5] != 1:
        raise ElfError("only 64-bit little-endian ELF files are supported")
    (machine,) = struct.unpack_from("<H", ident, 18)
    (phoff, shoff) = struct.unpack_from("<QQ", ident, 32)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", ident, 54)

    segments = []
    if phnum:
        if phnum > MAX_PHDRS or phentsize < 56:
            raise ElfError("implausible program header table")
        table = _read_at(f, phoff, phnum * phentsize)
        for i in range(phnum):
            ptype, flags, offset, vaddr, _paddr, filesz = struct.unpack_from(
                "<IIQQQQ", table, i * phentsize)
            if ptype == PT_LOAD:
                segments.append(LoadSegment(offset, vaddr, filesz, flags))

    # Notes written by any toolchain, in any library: an argument spec may be missing.
    found = ProbeNotes(args_optional=True)
    base = None
    if shnum:
        if shnum > MAX_SECTIONS or shentsize < 64 or shstrndx >= shnum:
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
            if name == ".stapsdt.base":
                base = addr
            if stype != SHT_NOTE or name not in (".note.stapsdt", ".note.spanprobe"):
                continue
            if size > MAX_NOTE_SECTION:
                raise ElfError("note section %s is implausibly large (%d bytes)" % (name, size))
            found.add_section(_read_at(f, offset, size), 0, size)
    return ElfProbes(machine, found.notes, found.schema, base, segments)


def read_probes_from_path(path: str) -> ElfProbes:
    with open(path, "rb") as f:
        return read_probes(f)
