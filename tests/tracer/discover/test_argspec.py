"""SDT argument specs parsed into where each argument is (x86_64 and aarch64), and what is refused."""

from __future__ import annotations

import pytest

from spanprobe.elf.arch import EM_AARCH64, EM_X86_64
from spanprobe_tracer.discover import argspec


@pytest.mark.parametrize("spec,expect", [
    ("8@%rdi", (8, False, "reg", "di", 0)),
    ("-4@%esi", (4, True, "reg", "si", 0)),
    ("-1@%dil", (1, True, "reg", "di", 0)),
    ("2@%r9w", (2, False, "reg", "r9", 0)),
    ("8@%r15", (8, False, "reg", "r15", 0)),
    ("-4@8(%rsp)", (4, True, "mem", "sp", 8)),
    ("8@-16(%rbp)", (8, False, "mem", "bp", -16)),
    ("8@(%rax)", (8, False, "mem", "ax", 0)),
    ("4@$42", (4, False, "imm", None, 42)),
    ("-4@$-1", (4, True, "imm", None, -1)),
])
def test_x86_specs(spec, expect):
    loc = argspec.parse(spec, EM_X86_64)
    assert (loc.size, loc.signed, loc.kind, loc.reg, loc.offset) == expect


@pytest.mark.parametrize("spec,expect", [
    ("8@x0", (8, False, "reg", "0", 0)),
    ("-4@x7", (4, True, "reg", "7", 0)),
    ("8@[sp]", (8, False, "mem", "sp", 0)),
    ("-4@[sp, 8]", (4, True, "mem", "sp", 8)),
    ("8@[x29, -16]", (8, False, "mem", "29", -16)),
    ("-4@42", (4, True, "imm", None, 42)),           # GCC's sys/sdt.h: constants bare
    ("2@-1", (2, False, "imm", None, -1)),
    ("8@#0x10", (8, False, "imm", None, 16)),
])
def test_aarch64_specs(spec, expect):
    loc = argspec.parse(spec, EM_AARCH64)
    assert (loc.size, loc.signed, loc.kind, loc.reg, loc.offset) == expect


def test_split_keeps_aarch64_memory_operands_whole():
    assert argspec.split_specs("8@x0 -4@[sp, 8] 8@[sp]") == ["8@x0", "-4@[sp, 8]", "8@[sp]"]


@pytest.mark.parametrize("spec", ["8@%xmm0", "3@%rdi", "8@foo(%rip)", "nonsense", "8@%rdi,%rsi"])
def test_unsupported_specs_are_refused(spec):
    with pytest.raises(argspec.ArgSpecError):
        argspec.parse(spec, EM_X86_64)


def test_unknown_machine_refused():
    with pytest.raises(argspec.ArgSpecError, match="machine 8"):
        argspec.parse("8@%rdi", 8)
