"""The C rendered from layouts, for both architectures, without loading anything into the kernel."""

from __future__ import annotations

import pytest

from spanprobe.elf.arch import EM_AARCH64, EM_X86_64
from spanprobe_tracer.cli.selftest import sample_image
from spanprobe_tracer.discover import argspec
from spanprobe_tracer.kernel import CaptureConfig, ProviderPlan, render_module
from spanprobe_tracer.kernel.render import render_read


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
