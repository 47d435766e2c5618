"""Rendering BPF C from schemas, and decoding records, without loading anything into the kernel."""

from __future__ import annotations

import io
import math

import pytest

from fake_records import SDK_TRUNCATED, point_record, span_record
from spanprobe import Arg, ArgType as T, Provider
from spanprobe.elf.arch import ARCHES
from spanprobe.span import END_ARGS, EVENT_ARGS, START_ARGS
from spanprobe_tracer import argspec
from spanprobe_tracer.discovery import build_image
from spanprobe_tracer.elffile import EM_AARCH64, EM_X86_64, read_probes
from spanprobe_tracer.program import Plan, ProgramConfig, decoders_for
from spanprobe_tracer.selftest import sample_image


def image_of(provider: Provider, arch: str = "x86_64"):
    return build_image(read_probes(io.BytesIO(provider.build_image(ARCHES[arch]).data)), "test")


# --- argument specs -------------------------------------------------------------------

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


def test_render_reads():
    m = EM_X86_64
    assert argspec.render_read(argspec.parse("8@%rdi", m), m, "w", "F;") == "w = (u64)ctx->di;"
    assert "ctx->sp + (8)" in argspec.render_read(argspec.parse("-4@8(%rsp)", m), m, "w", "F;")
    assert argspec.render_read(argspec.parse("8@x3", EM_AARCH64), EM_AARCH64, "w", "F;") == "w = (u64)ctx->regs[3];"


# --- plans and rendering ------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_sample_renders_for_both_architectures(arch):
    plan = Plan(sample_image(arch), ProgramConfig())
    src = plan.module.render(3)
    assert "#define SP_PROGRAM 3" in src
    for fn in plan.module.functions:
        assert "int %s(struct pt_regs *ctx)" % fn in src
    if arch == "aarch64":
        assert "ctx->regs[0]" in src and "ctx->di" not in src
        assert "ctx->sp + (8)" in src  # twelve-argument start probe: four on the stack
    else:
        assert "ctx->di" in src and "ctx->sp + (8)" in src
    assert src.count("_Static_assert") >= 4


def test_spans_of_one_shape_share_handlers():
    p = Provider("shared")
    for i in range(6):
        extra = [Arg("a", T.STR)] if i % 2 else []
        p._declare("s%d_start" % i, [*START_ARGS, *extra], "span_start")
        p._declare("s%d_end" % i, END_ARGS, "span_end")
        p._spans.append({"name": "op%d" % i, "start": "s%d_start" % i, "end": "s%d_end" % i})
    plan = Plan(image_of(p), ProgramConfig())
    assert len(plan.spans) == 6
    assert len(plan.module.spans) == 2
    assert {s.shape.index for s in plan.spans} == {0, 1}
    # Another provider, other names, same shapes: the same module.
    q = Provider("other")
    q._declare("x_start", START_ARGS, "span_start")
    q._declare("x_end", END_ARGS, "span_end")
    q._declare("y_start", [*START_ARGS, Arg("zzz", T.STR)], "span_start")
    q._declare("y_end", END_ARGS, "span_end")
    q._spans += [{"name": "x", "start": "x_start", "end": "x_end"}, {"name": "y", "start": "y_start", "end": "y_end"}]
    assert Plan(image_of(q), ProgramConfig()).module.key == plan.module.key
    # A different capture setting is a different module.
    assert Plan(image_of(q), ProgramConfig(string_max=64)).module.key != plan.module.key


def test_protocol_violations_reject_the_provider():
    """The SDK's schema validation (shared with the tracer) refuses the whole provider."""
    from spanprobe.errors import SchemaError
    p = Provider("bad")
    p._declare("a_start", [Arg("span_id", T.U64), Arg("x", T.STR)], "span_start")
    p._declare("a_end", END_ARGS, "span_end")
    p._spans.append({"name": "a", "start": "a_start", "end": "a_end"})
    with pytest.raises(SchemaError, match="span_start probe must start with"):
        image_of(p)


def test_plan_skips_spans_it_cannot_pair_with_a_warning():
    """Defence in depth: a schema that validated but whose probes could not all be placed."""
    image = image_of(typed_provider())
    del image.probes["t_end"]  # as if its SDT note were missing
    image.broken["t_end"] = "declared in the schema but has no SDT note"
    warnings = []
    plan = Plan(image, ProgramConfig(), warn=warnings.append)
    assert plan.spans == []
    assert sorted(p.name for p in plan.points) == ["happened", "typed.plain"]
    assert any("span 'typed op'" in w and "cannot be traced" in w for w in warnings)


def test_config_is_checked():
    for bad in (ProgramConfig(string_max=0), ProgramConfig(string_max=5000), ProgramConfig(ringbuf_bytes=5000),
                ProgramConfig(min_duration_ns=-1)):
        with pytest.raises(ValueError):
            bad.check()


# --- decoding -------------------------------------------------------------------------------

def typed_provider():
    p = Provider("typed")
    p._declare("t_start", [*START_ARGS,
        Arg("i8", T.I8), Arg("i16", T.I16), Arg("i32", T.I32), Arg("u64", T.U64), Arg("s", T.STR)], "span_start")
    p._declare("t_end", [*END_ARGS, Arg("f", T.F64), Arg("b", T.BOOL), Arg("raw", T.BYTES), Arg("u8", T.U8),
                         Arg("big", T.I64)], "span_end")
    p._spans.append({"name": "typed op", "kind": "client", "start": "t_start", "end": "t_end"})
    p._declare("ev", [*EVENT_ARGS, Arg("what", T.STR), Arg("n", T.U16)], "event")
    p._events.append({"name": "happened", "probe": "ev"})
    p.add_probe("plain", x="i32", y=str)
    return p


@pytest.fixture
def typed():
    sm = 16
    plan = Plan(image_of(typed_provider()), ProgramConfig(string_max=sm))
    return plan, decoders_for(plan), sm


def test_span_values_of_every_type(typed):
    plan, decoders, sm = typed
    span = plan.spans[0]
    # Registers hold garbage above a narrow argument's width: the decoder must ignore it.
    start = [7, 5, 0xAAAA, 0xBBBB, 1 | (1 << 8) * 0, 0xFFFFFF80, 0xDEAD8000, 0x1_FFFF_FFFF, 2**64 - 1, "hello"]
    end = [7, 0, "", "", 1, -0.0, 0x100, b"\x00\x01\x02", 0x1FF, -2**63]
    rec = decoders[id(span)].decode(span_record(span, sm, start, end, start_ns=10, end_ns=25), 100, 101)
    assert (rec.span_id, rec.parent_id, rec.trace_id) == (7, 5, (0xAAAA << 64) | 0xBBBB)
    assert (rec.start_ns, rec.end_ns, rec.trace_flags, rec.status) == (10, 25, 1, 0)
    a = rec.attributes
    assert a["i8"] == -128 and a["i16"] == -32768 and a["i32"] == -1
    assert a["u64"] == str(2**64 - 1)
    assert a["s"] == "hello"
    assert a["f"] == 0.0 and math.copysign(1, a["f"]) == -1
    assert a["b"] is False  # only the low byte counts
    assert a["raw"] == b"\x00\x01\x02"
    assert a["u8"] == 0xFF and a["big"] == -2**63
    assert rec.notes is None


def test_span_status_truncation_and_failures(typed):
    plan, decoders, sm = typed
    span = plan.spans[0]
    start = [7, 0, 1, 2, 1 | (1 << 8 + 4), 0, 0, 0, 0, "s" * 40]  # attribute 4 ("s") failed conversion
    end = [7, 1, "E" * 30, "why", 1 | (1 << 8 + 0), 1.0, 1, (b"x" * 40, SDK_TRUNCATED), 0, 0]
    rec = decoders[id(span)].decode(span_record(span, sm, start, end, end_fail=1 << 8), 100, 101)
    assert rec.status == 1
    assert rec.error_type == "E" * 16 and rec.error_message == "why"
    assert "s" not in rec.attributes and "f" not in rec.attributes
    assert rec.notes.conversion_failed == ["s", "f"]
    assert rec.notes.read_failed == ["u8"]          # end argument 8 could not be read
    assert rec.attributes["raw"] == b"x" * 16
    assert rec.notes.truncated == ["raw"]           # cut by the SDK and by the capture length


def test_strings_exactly_at_the_limit_are_whole(typed):
    plan, decoders, sm = typed
    span = plan.spans[0]
    for text, cut in (("a" * sm, False), ("a" * (sm + 1), True), ("é" * 9, True)):
        rec = decoders[id(span)].decode(span_record(span, sm, [1, 0, 1, 1, 1, 0, 0, 0, 0, text],
                                                    [1, 0, "", "", 1, 0.0, 0, b"", 0, 0]), 1, 1)
        assert rec.attributes["s"] == (text.encode()[:sm].decode("utf-8", "ignore"))
        assert bool(rec.notes and rec.notes.truncated) is cut


def test_event_and_plain_records(typed):
    plan, decoders, sm = typed
    ev = next(p for p in plan.points if p.role == "event")
    plain = next(p for p in plan.points if p.role == "plain")
    assert ev.name == "happened" and plain.name == "typed.plain"
    rec = decoders[id(ev)].decode(point_record(ev, sm, [9, 3, 4, 1 | (1 << 9), "x", 65535], ts=77), 5, 6)
    assert (rec.span_id, rec.trace_id, rec.trace_flags, rec.ts_ns) == (9, (3 << 64) | 4, 1, 77)
    assert rec.attributes == {"what": "x"} and rec.notes.conversion_failed == ["n"]
    rec = decoders[id(plain)].decode(point_record(plain, sm, [-5, "y"]), 5, 6)
    assert rec.attributes == {"x": -5, "y": "y"} and rec.span_id == 0
