"""The C rendered from layouts, for both architectures, without loading anything into the kernel."""

from __future__ import annotations

import re

import pytest

from spanprobe.abi.protocol import PRIVATE_DIR_PREFIX, PROC_SELF, fd_path
from spanprobe.elf.arch import EM_AARCH64, EM_X86_64
from spanprobe_tracer.cli.selftest import sample_image
from spanprobe_tracer.discover import argspec
from spanprobe_tracer.kernel import CaptureConfig, ProviderPlan, render_core, render_module
from spanprobe_tracer.kernel.render import path_matcher, render_read


def test_render_reads():
    m = EM_X86_64
    assert render_read(argspec.parse("8@%rdi", m), m, "w", "F;") == "w = (u64)ctx->di;"
    assert "ctx->sp + (8)" in render_read(argspec.parse("-4@8(%rsp)", m), m, "w", "F;")
    assert render_read(argspec.parse("8@x3", EM_AARCH64), EM_AARCH64, "w", "F;") == "w = (u64)ctx->regs[3];"


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_sample_renders_for_both_architectures(arch):
    plan = ProviderPlan(sample_image(arch), CaptureConfig())
    src = render_module(plan.layout, 3)
    assert "#define SP_PROGRAM 3" in src
    for fn in plan.layout.functions:
        assert "int %s(struct pt_regs *ctx)" % fn in src
    if arch == "aarch64":
        assert "ctx->regs[0]" in src and "ctx->di" not in src
        assert "ctx->sp + (8)" in src  # twelve-argument start probe: four on the stack
    else:
        assert "ctx->di" in src and "ctx->sp + (8)" in src
    assert src.count("_Static_assert") >= 4


def _spelled(condition: str) -> str:
    """The text a rendered C condition ``name[...] == 'c' && ...`` tests for, in order."""
    chars = re.findall(r"name\[(?:\(i\) \+ )?(\d+)\] == ('.'|\d+)", condition)
    assert [int(i) for i, _ in chars] == list(range(len(chars)))
    return "".join(c[1] if c.startswith("'") else chr(int(c)) for _, c in chars)


def test_the_dlopen_path_matcher_is_rendered_from_the_protocol():
    """bpf/core.c stops a process at dlopen() of what the SDK loads providers from: a memfd under
    PROC_SELF, or a file in a PRIVATE_DIR_PREFIX directory; the spelling comes from spanprobe.abi."""
    defines = dict(re.findall(r"#define (SP_AT_PROC_SELF|SP_AT_PRIVATE_DIR|SP_PRIVATE_DIR_LEN)\S* (.*)", path_matcher()))
    assert _spelled(defines["SP_AT_PROC_SELF"]) == PROC_SELF + "/"
    assert fd_path(3).startswith(PROC_SELF + "/") and fd_path(3, spelling=2).startswith(PROC_SELF + "/")
    assert _spelled(defines["SP_AT_PRIVATE_DIR"]) == "/" + PRIVATE_DIR_PREFIX
    assert int(defines["SP_PRIVATE_DIR_LEN"]) == len("/" + PRIVATE_DIR_PREFIX)
    core = render_core(CaptureConfig())
    assert core.index(path_matcher()) < core.index("sp_provider_path(const char *name)")
    assert "SP_AT_PROC_SELF(name)" in core and "SP_AT_PRIVATE_DIR(name, i)" in core
