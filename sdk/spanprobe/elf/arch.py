"""Per-architecture facts for probe sites: machine code and argument specs.

A probe site is a tiny function ``nop; ret``. The probe address is the
``nop``, the function's first instruction, so at the probe every argument is
exactly where the C calling convention put it: the first ones in argument
registers, the rest in 8-byte stack slots above the return address (x86_64)
or at the stack pointer (aarch64). The argument specs in the notes say so in
the SystemTap SDT v3 syntax that bcc, bpftrace, perf and SystemTap parse.
"""

import platform

#: ELF e_machine of each supported architecture.
EM_X86_64, EM_AARCH64 = 62, 183


class Arch:
    name = None
    elf_machine = None
    #: One-instruction probe site followed by a return, padded to ``site_size``.
    site_code = b""
    site_size = 16
    pad_byte = b"\0"

    def arg_spec(self, index, size, signed):
        """The SDT argument spec of argument ``index`` (0-based)."""
        raise NotImplementedError

    @staticmethod
    def _prefix(size, signed):
        return f"{'-' if signed else ''}{size}"


class X86_64(Arch):
    name = "x86_64"
    elf_machine = EM_X86_64
    # nop5 (nopl 0x0(%rax,%rax,1)); ret. A uprobe on a 5-byte nop is one the kernel can optimize
    # (x86 optimized uprobes, sys_uprobe: Linux 6.18 here): after the first hit it writes a call to a
    # trampoline page over the nop, which enters the kernel by a syscall instead of an int3 trap,
    # ~100 ns less a hit measured (bench_decorators). The call's push lands in this function's own
    # red zone, which it never uses; kernels without the feature trap on it as on a one-byte nop.
    site_code = b"\x0f\x1f\x44\x00\x00\xc3"
    pad_byte = b"\xcc"  # int3: never executed, traps if it ever were
    # System V AMD64: register names by operand size (8, 4, 2, 1 bytes).
    _REGS = (
        ("rdi", "edi", "di", "dil"),
        ("rsi", "esi", "si", "sil"),
        ("rdx", "edx", "dx", "dl"),
        ("rcx", "ecx", "cx", "cl"),
        ("r8", "r8d", "r8w", "r8b"),
        ("r9", "r9d", "r9w", "r9b"),
    )
    _SIZE_INDEX = {8: 0, 4: 1, 2: 2, 1: 3}

    def arg_spec(self, index, size, signed):
        prefix = self._prefix(size, signed)
        if index < len(self._REGS):
            return f"{prefix}@%{self._REGS[index][self._SIZE_INDEX[size]]}"
        # 0(%rsp) holds the return address; stack arguments follow in 8-byte slots.
        offset = 8 * (index - len(self._REGS) + 1)
        return f"{prefix}@{offset}(%rsp)"


class AArch64(Arch):
    name = "aarch64"
    elf_machine = EM_AARCH64
    site_code = (0xD503201F).to_bytes(4, "little") + (0xD65F03C0).to_bytes(4, "little")
    pad_byte = b"\0"  # udf #0 when read as words
    _NREGS = 8  # x0-x7

    def arg_spec(self, index, size, signed):
        prefix = self._prefix(size, signed)
        if index < self._NREGS:
            return f"{prefix}@x{index}"
        # AAPCS64 (Linux): stack arguments in 8-byte slots starting at sp.
        offset = 8 * (index - self._NREGS)
        return f"{prefix}@[sp, {offset}]" if offset else f"{prefix}@[sp]"


ARCHES = {"x86_64": X86_64(), "aarch64": AArch64()}
_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


def host_arch():
    """The Arch of this machine, or None where spanprobe cannot place probes."""
    machine = platform.machine().lower()
    return ARCHES.get(_ALIASES.get(machine, machine))
