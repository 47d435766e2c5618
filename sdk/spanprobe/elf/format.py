"""ELF constants (elf(5)) and the note types of a provider object, for the writer and the reader."""

ET_DYN = 3
PT_LOAD, PT_DYNAMIC, PT_GNU_STACK = 1, 2, 0x6474E551
PF_X, PF_W, PF_R = 1, 2, 4
SHT_PROGBITS, SHT_STRTAB, SHT_HASH, SHT_DYNAMIC, SHT_NOTE, SHT_DYNSYM = 1, 3, 5, 6, 7, 11
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
DT_NULL, DT_HASH, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT, DT_SONAME = 0, 4, 5, 6, 10, 11, 14
STB_GLOBAL, STT_OBJECT, STT_FUNC = 1, 1, 2
EHDR_SIZE, PHDR_SIZE, SHDR_SIZE = 64, 56, 64

#: SystemTap SDT probe notes (version 3), in the section SDT_NOTE_SECTION.
STAPSDT_NOTE_NAME, NT_STAPSDT = b"stapsdt", 3
SDT_NOTE_SECTION = ".note.stapsdt"
SDT_BASE_SECTION = ".stapsdt.base"
#: The schema note (docs/abi.md, "The schema note"), in the section SCHEMA_NOTE_SECTION.
SCHEMA_NOTE_NAME, NT_SPANPROBE_SCHEMA = b"spanprobe", 1
SCHEMA_NOTE_SECTION = ".note.spanprobe"
