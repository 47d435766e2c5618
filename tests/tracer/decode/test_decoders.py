"""Decoding ring-buffer records (built in Python at the rendered layout's offsets) into span and point records."""

from __future__ import annotations

import math

import pytest

from spanprobe.abi.protocol import BYTES_TRUNCATED
from spanprobe_tracer.decode import SpanRecord, plan_decoders
from spanprobe_tracer.kernel import CaptureConfig, ProviderPlan
from tests.support.fake_records import image_of, point_record, span_record, typed_provider


@pytest.fixture
def typed():
    sm = 16
    plan = ProviderPlan(image_of(typed_provider()), CaptureConfig(string_max=sm))
    return plan, plan_decoders(plan), sm


def test_span_values_of_every_type(typed):
    plan, decoders, sm = typed
    span = plan.spans[0]
    # Registers hold garbage above a narrow argument's width: the decoder must ignore it.
    start = [7, 5, 0xAAAA, 0xBBBB, 1 | (1 << 8) * 0, 0xFFFFFF80, 0xDEAD8000, 0x1_FFFF_FFFF, 2**64 - 1, "hello"]
    end = [7, 0, "", "", 1, -0.0, 0x100, b"\x00\x01\x02", 0x1FF, -2**63]
    rec = decoders[span].decode(span_record(span, sm, start, end, start_ns=10, end_ns=25), 100, 101)
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
    end = [7, 1, "E" * 30, "why", 1 | (1 << 8 + 0), 1.0, 1, (b"x" * 40, BYTES_TRUNCATED), 0, 0]
    rec = decoders[span].decode(span_record(span, sm, start, end, end_fail=1 << 8), 100, 101)
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
        rec = decoders[span].decode(span_record(span, sm, [1, 0, 1, 1, 1, 0, 0, 0, 0, text],
                                                    [1, 0, "", "", 1, 0.0, 0, b"", 0, 0]), 1, 1)
        assert rec.attributes["s"] == (text.encode()[:sm].decode("utf-8", "ignore"))
        assert bool(rec.notes and rec.notes.truncated) is cut


def test_event_and_plain_records(typed):
    plan, decoders, sm = typed
    ev = next(p for p in plan.points if p.role == "event")
    plain = next(p for p in plan.points if p.role == "plain")
    assert ev.name == "happened" and plain.name == "typed.plain"
    rec = decoders[ev].decode(point_record(ev, sm, [9, 3, 4, 1 | (1 << 9), "x", 65535], ts=77), 5, 6)
    assert (rec.span_id, rec.trace_id, rec.trace_flags, rec.ts_ns) == (9, (3 << 64) | 4, 1, 77)
    assert rec.attributes == {"what": "x"} and rec.notes.conversion_failed == ["n"]
    rec = decoders[plain].decode(point_record(plain, sm, [-5, "y"]), 5, 6)
    assert rec.attributes == {"x": -5, "y": "y"} and rec.span_id == 0


def test_the_fast_path_decodes_as_the_careful_one(typed):
    """SpanDecoder.decode is Python written per span shape for the common record; every record, common
    or not (failed reads and conversions, errors, cut text, values of every width and sign), must come
    out as the careful path, which reads any record, makes it."""
    import random

    plan, decoders, sm = typed
    span = plan.spans[0]
    decoder = decoders[span]
    rng = random.Random(13)
    words = [0, 1, 0x7F, 0x80, 0xFF, 0x8000, 0xFFFF_FFFF, 2**63 - 1, 2**63, 2**64 - 1, 0xDEAD_BEEF_0000_0080]
    texts = ["", "a", "é✓", "x" * sm, "x" * (sm + 1), "é" * 9, "\x00 inside"]
    fast = 0
    for _ in range(400):
        start = [rng.getrandbits(64), rng.getrandbits(64), rng.getrandbits(64), rng.getrandbits(64),
                 1 | (rng.random() < 0.1) << (8 + rng.randrange(5))] + [rng.choice(words) for _ in range(4)] + \
                [rng.choice(texts)]
        raw = rng.choice([b"", b"\x00\x01", b"y" * (sm + 3), (b"z" * 5, BYTES_TRUNCATED)])
        end = [start[0], rng.choice([0, 0, 0, 1, 2, 7]), rng.choice(texts), rng.choice(texts),
               1 | (rng.random() < 0.1) << (8 + rng.randrange(5)), rng.choice([0.0, -0.0, 1.5, math.inf]),
               rng.choice(words), raw, rng.choice(words), rng.choice(words)]
        fails = [0, 0, 0, 1 << rng.randrange(12)]
        rec = span_record(span, sm, start, end, start_fail=rng.choice(fails), end_fail=rng.choice(fails))
        got, want = decoder.decode(rec, 100, 101), decoder.decode_careful(rec, 100, 101)
        for name in SpanRecord.__slots__:
            a, b = getattr(got, name), getattr(want, name)
            if name == "notes":
                a, b = a and (a.truncated, a.conversion_failed, a.read_failed), b and (
                    b.truncated, b.conversion_failed, b.read_failed)
            if name == "attributes":
                assert list(a) == list(b)  # the same order: the exported order
                a = {k: repr(v) for k, v in a.items()}  # -0.0 and nan compared as written
                b = {k: repr(v) for k, v in b.items()}
            assert a == b, name
        fast += not (want.status or want.notes and (want.notes.read_failed or want.notes.conversion_failed))
    assert fast > 100  # a good share took the fast path
