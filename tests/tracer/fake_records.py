"""Ring-buffer records built in Python, laid out as the rendered BPF code lays them out.

Lets decoding and span building be tested (and benchmarked) without BPF: the
offsets come from program.SpanShape / PointShape, the same numbers the C
code's _Static_asserts pin down.
"""

from __future__ import annotations

import struct

from spanprobe_tracer.program import HDR, KIND_POINT, KIND_SPAN, ArgField, PointDef, SpanDef

SDK_TRUNCATED = 1 << 31


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


def span_record(span: SpanDef, string_max: int, start_args, end_args, pid=100, tid=101, start_ns=1_000,
                end_ns=2_000, start_fail=0, end_fail=0, cookie=1) -> bytes:
    s = span.shape
    buf = bytearray(s.record_size)
    HDR.pack_into(buf, 0, KIND_SPAN, s.index, 1, pid, tid, cookie)
    struct.pack_into("<QI4xQII", buf, 24, end_ns, end_fail, start_ns, tid, start_fail)
    for f, v in zip(s.start_fields, start_args):
        _put(buf, f, v, string_max)
    for f, v in zip(s.end_fields, end_args):
        _put(buf, f, v, string_max)
    return bytes(buf)


def point_record(point: PointDef, string_max: int, args, pid=100, tid=101, ts=1_500, fail=0, cookie=1) -> bytes:
    p = point.shape
    buf = bytearray(p.record_size)
    HDR.pack_into(buf, 0, KIND_POINT, p.index, 1, pid, tid, cookie)
    struct.pack_into("<QI", buf, 24, ts, fail)
    for f, v in zip(p.fields, args):
        _put(buf, f, v, string_max)
    return bytes(buf)
