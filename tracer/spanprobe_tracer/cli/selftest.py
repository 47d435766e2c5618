"""A sample provider image built in-process, for `spanprobe doctor` and rendering tests.

It has one span (every attribute type), one event and one plain probe, written
by the SDK exactly as an application's provider would be, but never loaded:
the tracer reads it back from bytes like any provider it finds in a process.
"""

from __future__ import annotations

from spanprobe import Arg, ArgType as T, Provider
from spanprobe.abi.protocol import END_ARGS, EVENT_ARGS, START_ARGS
from spanprobe.elf.arch import ARCHES, host_arch
from spanprobe.elf.reader import read_elf

from ..discover import ProviderImage, build_image


def sample_provider(name: str = "spanprobe_selftest") -> Provider:
    p = Provider(name)
    p.declare("op_start", [*START_ARGS, Arg("i", T.I32), Arg("s", T.STR), Arg("b", T.BYTES),
                           Arg("f", T.F64), Arg("ok", T.BOOL), Arg("u", T.U64), Arg("x", T.I8)], "span_start")
    p.declare("op_end", [*END_ARGS, Arg("result", T.I64)], "span_end")
    p.declare("note", [*EVENT_ARGS, Arg("what", T.STR)], "event")
    p.add_probe("tick", n="u16")
    p.add_schema_span({"name": "op", "kind": "internal", "start": "op_start", "end": "op_end"})
    p.add_schema_event({"name": "note", "probe": "note"})
    return p


def sample_image(arch_name: str = "") -> ProviderImage:
    arch = ARCHES[arch_name] if arch_name else host_arch()
    image = sample_provider().build_image(arch)
    return build_image(read_elf(image.data), "sample provider")
