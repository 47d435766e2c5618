"""SDT argument specs (``-4@%esi``, ``8@16(%rsp)``) parsed into where each argument is.

The notes in a provider say where each argument is at the probe site.
Discovery parses them (and checks them against the schema's types); the
kernel stage renders a C read per location (kernel.render.render_read), so
the BPF program reads exactly the location the probe site uses, with no
per-hit interpretation (what bcc's generic USDT support also does, but per
process: spanprobe renders once per argument shape and shares it between
every provider and process that has it).

x86_64 (AT&T syntax, as GCC's sys/sdt.h and the spanprobe SDK write it) and
aarch64 are understood. Anything else raises ArgSpecError, and the tracer
skips that probe with a warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional

from spanprobe.elf.arch import EM_AARCH64, EM_X86_64


class ArgSpecError(ValueError):
    """An argument spec this tracer cannot read."""


@dataclass(frozen=True)
class ArgLocation:
    """Where one probe argument is: a register, memory at register+offset, or a constant."""

    size: int            # bytes, 1/2/4/8
    signed: bool
    kind: str            # "reg", "mem" or "imm"
    reg: Optional[str]   # pt_regs field (x86_64) or register number as text (aarch64)
    offset: int = 0      # displacement for "mem", value for "imm"


# x86_64 register spellings -> the struct pt_regs field holding them.
_X86_REGS = {}
for _field, _names in {
    "ax": ("rax", "eax", "ax", "al"), "bx": ("rbx", "ebx", "bx", "bl"),
    "cx": ("rcx", "ecx", "cx", "cl"), "dx": ("rdx", "edx", "dx", "dl"),
    "si": ("rsi", "esi", "si", "sil"), "di": ("rdi", "edi", "di", "dil"),
    "bp": ("rbp", "ebp", "bp", "bpl"), "sp": ("rsp", "esp", "sp", "spl"),
    "ip": ("rip",),
}.items():
    for _name in _names:
        _X86_REGS[_name] = _field
for _n in range(8, 16):
    for _suffix in ("", "d", "w", "b"):
        _X86_REGS["r%d%s" % (_n, _suffix)] = "r%d" % _n

_SPEC = re.compile(r"(-?)(1|2|4|8)@(.+)\Z")
_X86_REG = re.compile(r"%([a-z0-9]+)\Z")
_X86_MEM = re.compile(r"(-?(?:0x[0-9a-fA-F]+|\d+))?\(%([a-z0-9]+)\)\Z")
_X86_IMM = re.compile(r"\$(-?(?:0x[0-9a-fA-F]+|\d+))\Z")
_A64_REG = re.compile(r"[xw](\d+)\Z")
_A64_MEM = re.compile(r"\[(sp|x\d+)(?:\s*,\s*#?(-?(?:0x[0-9a-fA-F]+|\d+)))?\]\Z")
# GCC's sys/sdt.h writes aarch64 constants bare (``-4@42``, ``2@-1``); '#' is accepted too.
_A64_IMM = re.compile(r"#?(-?(?:0x[0-9a-fA-F]+|\d+))\Z")


def split_specs(text: str) -> List[str]:
    """The space-separated specs of one note (aarch64 memory operands contain a space)."""
    specs: List[str] = []
    for token in text.split():
        if specs and specs[-1].count("[") > specs[-1].count("]"):
            specs[-1] += " " + token
        else:
            specs.append(token)
    return specs


def _number(text: str, limit: int) -> int:
    """A displacement or constant as GCC writes it (decimal, or 0x hex), within +-limit."""
    value = int(text, 16 if text.lstrip("-").startswith("0x") else 10)
    if not -limit <= value < limit:
        raise ArgSpecError("%s is out of range for an argument operand" % text)
    return value


def parse(spec: str, machine: int) -> ArgLocation:
    m = _SPEC.match(spec.strip())
    if not m:
        raise ArgSpecError("argument spec %r is not SIZE@OPERAND" % spec)
    signed, size, operand = m.group(1) == "-", int(m.group(2)), m.group(3)
    if machine == EM_X86_64:
        r = _X86_REG.match(operand)
        if r and r.group(1) in _X86_REGS:
            return ArgLocation(size, signed, "reg", _X86_REGS[r.group(1)])
        r = _X86_MEM.match(operand)
        if r and r.group(2) in _X86_REGS:
            return ArgLocation(size, signed, "mem", _X86_REGS[r.group(2)], _number(r.group(1) or "0", 1 << 31))
        r = _X86_IMM.match(operand)
        if r:
            return ArgLocation(size, signed, "imm", None, _number(r.group(1), 1 << 63))
    elif machine == EM_AARCH64:
        r = _A64_REG.match(operand)
        if r and int(r.group(1)) <= 30:
            return ArgLocation(size, signed, "reg", r.group(1))
        r = _A64_MEM.match(operand)
        if r:
            reg = "sp" if r.group(1) == "sp" else r.group(1)[1:]
            return ArgLocation(size, signed, "mem", reg, _number(r.group(2) or "0", 1 << 31))
        r = _A64_IMM.match(operand)
        if r:
            return ArgLocation(size, signed, "imm", None, _number(r.group(1), 1 << 63))
    else:
        raise ArgSpecError("machine %d is not supported (x86_64 and aarch64 are)" % machine)
    raise ArgSpecError("argument spec %r: operand %r is not supported" % (spec, operand))
