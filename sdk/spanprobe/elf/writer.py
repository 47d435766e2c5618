"""Write a provider's shared object: the whole ELF file, in pure Python.

The file is the smallest thing glibc's ``dlopen`` accepts and every USDT tool
understands (docs/abi.md is the specification):

* a read+execute PT_LOAD with ``.hash``, ``.dynsym``, ``.dynstr``, the probe
  sites in ``.text`` and the one-byte ``.stapsdt.base``;
* a read+write PT_LOAD with ``.dynamic`` and ``.probes``, the 16-bit
  semaphores. It is file-backed and private, which the kernel's uprobe
  reference counters (``ref_ctr_offset``) require;
* PT_DYNAMIC, and PT_GNU_STACK so that loading never makes the stack
  executable;
* non-allocated ``.note.stapsdt`` (SDT notes, version 3: one per probe, and
  one per view of a probe with more than six arguments, at the probe's site
  with its semaphore: see spanprobe.abi.protocol.views) and
  ``.note.spanprobe`` (the schema), found through the section headers.

No relocations are needed: the code is position independent and nothing in
the image points at anything else at run time.
"""

import struct
from dataclasses import dataclass
from typing import List, Sequence

from ..abi.protocol import VIEW_WIDTH, views
from .arch import Arch
from .format import (DT_HASH, DT_NULL, DT_SONAME, DT_STRSZ, DT_STRTAB, DT_SYMENT, DT_SYMTAB, EHDR_SIZE, ET_DYN,
                     NT_SPANPROBE_SCHEMA, NT_STAPSDT, PF_R, PF_W, PF_X, PHDR_SIZE, PT_DYNAMIC, PT_GNU_STACK,
                     PT_LOAD, SCHEMA_NOTE_NAME, SCHEMA_NOTE_SECTION, SDT_BASE_SECTION, SDT_NOTE_SECTION,
                     SHDR_SIZE, SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, SHT_DYNAMIC, SHT_DYNSYM, SHT_HASH,
                     SHT_NOTE, SHT_PROGBITS, SHT_STRTAB, STAPSDT_NOTE_NAME, STB_GLOBAL, STT_FUNC, STT_OBJECT)

#: Bytes of one semaphore: a 16-bit counter (spanprobe.probes.semaphore reads it as one).
SEMAPHORE_SIZE = 2

_SYM_SIZE, _DYN_SIZE = 24, 16


@dataclass(frozen=True)
class ProbeSite:
    """What the writer needs to know about one probe."""

    name: str
    arg_specs: Sequence[str]


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD: where it is in the file and in memory, and its PF_* flags."""

    offset: int
    vaddr: int
    size: int
    flags: int


@dataclass(frozen=True)
class Image:
    """A written provider object and where its pieces landed (virtual addresses)."""

    data: bytes
    site_addrs: List[int]
    semaphore_addrs: List[int]
    site_symbols: List[str]
    semaphore_symbols: List[str]
    #: A symbol at ``anchor_addr``: its run-time address minus this is the load bias.
    anchor_symbol: str
    anchor_addr: int
    segments: List[Segment]


def _align(value, alignment):
    return (value + alignment - 1) & ~(alignment - 1)


def elf_hash(name: bytes) -> int:
    """The System V ABI symbol hash used by DT_HASH tables."""
    h = 0
    for c in name:
        h = (h << 4) + c
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


def note(name: bytes, note_type: int, desc: bytes) -> bytes:
    """One ELF note record, name and descriptor padded to 4 bytes."""
    name = name + b"\0"
    return (struct.pack("<III", len(name), len(desc), note_type)
            + name.ljust(_align(len(name), 4), b"\0")
            + desc.ljust(_align(len(desc), 4), b"\0"))


class _Strtab:
    def __init__(self):
        self.data = bytearray(b"\0")
        self._offsets = {}

    def add(self, s: str) -> int:
        if s not in self._offsets:
            self._offsets[s] = len(self.data)
            self.data += s.encode() + b"\0"
        return self._offsets[s]


def _hash_table(names: List[bytes]) -> bytes:
    """DT_HASH over the dynamic symbols (index 0 is the null symbol)."""
    nsyms = len(names) + 1
    nbucket = max(1, len(names))
    buckets, chains = [0] * nbucket, [0] * nsyms
    for index, name in enumerate(names, start=1):
        b = elf_hash(name) % nbucket
        chains[index], buckets[b] = buckets[b], index
    return struct.pack(f"<II{nbucket}I{nsyms}I", nbucket, nsyms, *buckets, *chains)


def write_provider(provider: str, probes: Sequence[ProbeSite], schema: bytes,
                   arch: Arch, soname: str = "") -> Image:
    """Lay out and write the provider's shared object for ``arch``."""
    page = 0x10000 if arch.name == "aarch64" else 0x1000
    nprobes = len(probes)
    site_symbols = [f"{provider}_{p.name}" for p in probes]
    semaphore_symbols = [f"{provider}_{p.name}_semaphore" for p in probes]

    dynstr = _Strtab()
    soname_off = dynstr.add(soname or f"libspanprobe-{provider}.so")
    anchor_symbol = "spanprobe.base"  # the dot keeps it apart from every probe symbol
    sym_names = site_symbols + semaphore_symbols + [anchor_symbol]
    sym_name_offs = [dynstr.add(s) for s in sym_names]

    # --- read+execute segment: headers, hash, dynsym, dynstr, text, stapsdt.base
    nphdrs = 4
    off = EHDR_SIZE + nphdrs * PHDR_SIZE
    hash_off = _align(off, 8)
    hash_data = _hash_table([s.encode() for s in sym_names])
    dynsym_off = _align(hash_off + len(hash_data), 8)
    dynsym_size = (len(sym_names) + 1) * _SYM_SIZE
    dynstr_off = dynsym_off + dynsym_size
    text_off = _align(dynstr_off + len(dynstr.data), 16)
    text = b"".join(arch.site_code.ljust(arch.site_size, arch.pad_byte) for _ in probes)
    base_off = text_off + len(text)  # .stapsdt.base: one byte
    rx_end = base_off + 1

    # --- read+write segment: dynamic, probes (semaphores)
    rw_off = _align(rx_end, page)
    dynamic_off = rw_off
    dyn_entries = [
        (DT_HASH, hash_off), (DT_STRTAB, dynstr_off), (DT_SYMTAB, dynsym_off),
        (DT_STRSZ, len(dynstr.data)), (DT_SYMENT, _SYM_SIZE), (DT_SONAME, soname_off),
        (DT_NULL, 0),
    ]
    dynamic = b"".join(struct.pack("<qQ", tag, val) for tag, val in dyn_entries)
    probes_off = _align(dynamic_off + len(dynamic), 8)
    probes_size = max(nprobes, 1) * SEMAPHORE_SIZE
    rw_end = probes_off + probes_size

    site_addrs = [text_off + i * arch.site_size for i in range(nprobes)]
    sem_addrs = [probes_off + i * SEMAPHORE_SIZE for i in range(nprobes)]

    # --- non-allocated: notes, section names, section headers
    sdt_notes = b"".join(
        note(STAPSDT_NOTE_NAME, NT_STAPSDT,
             struct.pack("<QQQ", site_addrs[i], base_off, sem_addrs[i])
             + provider.encode() + b"\0" + name.encode() + b"\0"
             + " ".join(specs).encode() + b"\0")
        for i, p in enumerate(probes)
        for name, specs in [(p.name, p.arg_specs)] + [
            (view, p.arg_specs[first:first + VIEW_WIDTH]) for view, first in views(p.name, len(p.arg_specs))])
    sdt_off = _align(rw_end, 4)
    schema_notes = note(SCHEMA_NOTE_NAME, NT_SPANPROBE_SCHEMA, schema)
    schema_off = _align(sdt_off + len(sdt_notes), 4)
    shstrtab = _Strtab()
    sections = [
        # name, type, flags, offset, size, link, info, align, entsize
        (".hash", SHT_HASH, SHF_ALLOC, hash_off, len(hash_data), 2, 0, 8, 4),
        (".dynsym", SHT_DYNSYM, SHF_ALLOC, dynsym_off, dynsym_size, 3, 1, 8, _SYM_SIZE),
        (".dynstr", SHT_STRTAB, SHF_ALLOC, dynstr_off, len(dynstr.data), 0, 0, 1, 0),
        (".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, text_off, len(text), 0, 0, 16, 0),
        (SDT_BASE_SECTION, SHT_PROGBITS, SHF_ALLOC, base_off, 1, 0, 0, 1, 0),
        (".dynamic", SHT_DYNAMIC, SHF_ALLOC | SHF_WRITE, dynamic_off, len(dynamic), 3, 0, 8, _DYN_SIZE),
        (".probes", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, probes_off, probes_size, 0, 0, 8, 0),
        (SDT_NOTE_SECTION, SHT_NOTE, 0, sdt_off, len(sdt_notes), 0, 0, 4, 0),
        (SCHEMA_NOTE_SECTION, SHT_NOTE, 0, schema_off, len(schema_notes), 0, 0, 4, 0),
    ]
    name_offs = [shstrtab.add(s[0]) for s in sections]
    shstrtab_name = shstrtab.add(".shstrtab")
    shstrtab_off = schema_off + len(schema_notes)
    shoff = _align(shstrtab_off + len(shstrtab.data), 8)
    nsections = len(sections) + 2  # null + sections + .shstrtab
    text_index, base_index, probes_index = 4, 5, 7  # 1-based positions in `sections`

    out = bytearray(shoff + nsections * SHDR_SIZE)
    out[0:EHDR_SIZE] = struct.pack(
        "<4sBBBBB7xHHIQQQIHHHHHH",
        b"\x7fELF", 2, 1, 1, 0, 0,  # ELFCLASS64, little endian, version 1, SYSV ABI
        ET_DYN, arch.elf_machine, 1, 0, EHDR_SIZE, shoff, 0,
        EHDR_SIZE, PHDR_SIZE, nphdrs, SHDR_SIZE, nsections, nsections - 1)
    phdrs = [
        (PT_LOAD, PF_R | PF_X, 0, 0, rx_end, rx_end, page),
        (PT_LOAD, PF_R | PF_W, rw_off, rw_off, rw_end - rw_off, rw_end - rw_off, page),
        (PT_DYNAMIC, PF_R | PF_W, dynamic_off, dynamic_off, len(dynamic), len(dynamic), 8),
        (PT_GNU_STACK, PF_R | PF_W, 0, 0, 0, 0, 16),
    ]
    for i, (ptype, flags, offset, vaddr, filesz, memsz, align) in enumerate(phdrs):
        struct.pack_into("<IIQQQQQQ", out, EHDR_SIZE + i * PHDR_SIZE,
                         ptype, flags, offset, vaddr, vaddr, filesz, memsz, align)
    out[hash_off:hash_off + len(hash_data)] = hash_data
    symbols = (
        [(STT_FUNC, text_index, addr, arch.site_size) for addr in site_addrs]
        + [(STT_OBJECT, probes_index, addr, SEMAPHORE_SIZE) for addr in sem_addrs]
        + [(STT_OBJECT, base_index, base_off, 1)])
    for i, (name_off, (sym_type, shndx, value, size)) in enumerate(zip(sym_name_offs, symbols)):
        struct.pack_into("<IBBHQQ", out, dynsym_off + (i + 1) * _SYM_SIZE, name_off,
                         (STB_GLOBAL << 4) | sym_type, 0, shndx, value, size)
    out[dynstr_off:dynstr_off + len(dynstr.data)] = dynstr.data
    out[text_off:text_off + len(text)] = text
    out[dynamic_off:dynamic_off + len(dynamic)] = dynamic
    out[sdt_off:sdt_off + len(sdt_notes)] = sdt_notes
    out[schema_off:schema_off + len(schema_notes)] = schema_notes
    out[shstrtab_off:shstrtab_off + len(shstrtab.data)] = shstrtab.data
    headers = [(0, 0, 0, 0, 0, 0, 0, 0, 0)] + [
        (name_offs[i], s[1], s[2], s[3] if s[2] & SHF_ALLOC else 0, s[3], s[4], s[5], s[6], s[7], s[8])
        for i, s in enumerate(sections)
    ] + [(shstrtab_name, SHT_STRTAB, 0, 0, shstrtab_off, len(shstrtab.data), 0, 0, 1, 0)]
    for i, h in enumerate(headers):
        if len(h) == 9:  # the null section
            continue
        struct.pack_into("<IIQQQQIIQQ", out, shoff + i * SHDR_SIZE, *h)
    segments = [Segment(p[2], p[3], p[4], p[1]) for p in phdrs if p[0] == PT_LOAD]
    return Image(bytes(out), site_addrs, sem_addrs, site_symbols, semaphore_symbols,
                 anchor_symbol, base_off, segments)
