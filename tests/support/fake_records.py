"""Provider images and ring-buffer records built in Python, laid out as the rendered BPF code lays them out.

Lets planning, decoding and span building be tested (and benchmarked)
without BPF: images come from the SDK's own ELF writer and the tracer's
build_image, record offsets from kernel.layout (SpanShape / PointShape, the
same numbers the C code's _Static_asserts pin down).
"""

from __future__ import annotations

import io
import struct

from spanprobe import Arg, ArgType as T, Provider
from spanprobe.abi.protocol import END_ARGS, EVENT_ARGS, START_ARGS
from spanprobe.elf.arch import ARCHES
from spanprobe.elf.reader import read_probes
from spanprobe_tracer.discover import ProviderImage, build_image
from spanprobe_tracer.kernel import PointType, SpanType
from spanprobe_tracer.kernel.layout import HDR, HDR_SIZE, KIND_POINT, KIND_SPAN, POINT_FIXED, SPAN_FIXED, ArgField


def image_of(provider: Provider, arch: str = "x86_64") -> ProviderImage:
    """``provider`` as the tracer sees it once found in a process: its object written for ``arch``, read back."""
    return build_image(read_probes(io.BytesIO(provider.build_image(ARCHES[arch]).data)), "test")


def typed_provider() -> Provider:
    """A provider with an argument of every type: a span (attributes at start and end), an event, a plain probe."""
    p = Provider("typed")
    p.declare("t_start", [*START_ARGS,
        Arg("i8", T.I8), Arg("i16", T.I16), Arg("i32", T.I32), Arg("u64", T.U64), Arg("s", T.STR)], "span_start")
    p.declare("t_end", [*END_ARGS, Arg("f", T.F64), Arg("b", T.BOOL), Arg("raw", T.BYTES), Arg("u8", T.U8),
                         Arg("big", T.I64)], "span_end")
    p.add_schema_span({"name": "typed op", "kind": "client", "start": "t_start", "end": "t_end"})
    p.declare("ev", [*EVENT_ARGS, Arg("what", T.STR), Arg("n", T.U16)], "event")
    p.add_schema_event({"name": "happened", "probe": "ev"})
    p.add_probe("plain", x="i32", y=str)
    return p


def _put(buf: bytearray, f: ArgField, value, string_max: int) -> None:
    if f.type == "str":
        data = value.encode() if isinstance(value, str) else value
        data = data[:string_max + 1]
        buf[f.slot:f.slot + len(data)] = data
        buf[f.slot + len(data)] = 0
        word = 0x7F0000001000  # a pointer: meaningless to the decoder
    elif f.type == "bytes":
        data, flag = (value, 0) if isinstance(value, bytes) else value
        buf[f.slot:f.slot + min(len(data), string_max)] = data[:string_max]
        word = len(data) | flag
    elif f.type == "f64":
        word = struct.unpack("<Q", struct.pack("<d", value))[0]
    else:
        word = int(value) & (2**64 - 1)
    struct.pack_into("<Q", buf, f.word, word)


def span_record(span: SpanType, string_max: int, start_args, end_args, pid=100, tid=101, start_ns=1_000,
                end_ns=2_000, start_fail=0, end_fail=0, cookie=1) -> bytes:
    s = span.shape
    buf = bytearray(s.record_size)
    HDR.pack_into(buf, 0, KIND_SPAN, s.index, 1, pid, tid, cookie)
    SPAN_FIXED.pack_into(buf, HDR_SIZE, end_ns, end_fail, start_ns, tid, start_fail)
    for f, v in zip(s.start_fields, start_args):
        _put(buf, f, v, string_max)
    for f, v in zip(s.end_fields, end_args):
        _put(buf, f, v, string_max)
    return bytes(buf)


def point_record(point: PointType, string_max: int, args, pid=100, tid=101, ts=1_500, fail=0, cookie=1) -> bytes:
    p = point.shape
    buf = bytearray(p.record_size)
    HDR.pack_into(buf, 0, KIND_POINT, p.index, 1, pid, tid, cookie)
    POINT_FIXED.pack_into(buf, HDR_SIZE, ts, fail)
    for f, v in zip(p.fields, args):
        _put(buf, f, v, string_max)
    return bytes(buf)
