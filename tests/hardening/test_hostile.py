"""Hostile input from traced processes: malformed provider objects, and text made to attack a terminal.

The objects are written with the SDK's own ELF writer (or byte-patched after
it) and dlopen()ed from a memfd by app.py (`rawload`), exactly where a real
provider lives. The tracer must refuse each with a warning that says why,
keep tracing every other process, and never crash; what it prints must be
inert (no escape sequence, no control or bidi character) and bounded.
"""

from __future__ import annotations

import json
import struct
import time

import pytest

from tests.support.hardening_helpers import jsonl_tracer, spans_of, stats_of
from spanprobe import Provider
from spanprobe.abi import schema as schema_mod
from spanprobe.elf.arch import host_arch
from spanprobe.elf.writer import ProbeSite, write_provider
from tests.support.tracer_helpers import SITES, Tracer, wait_attached, wait_until

pytestmark = pytest.mark.bpf

#: Terminal attacks: erase screen, OSC title (BEL-terminated), an 8-bit CSI (C1), right-to-left
#: override and isolate, carriage return, backspace, DEL.
HOSTILE = "\x1b[2J\x1b]0;owned\x07\x9b31m\u202eevil\u2066\r\x08\x7f"


def craft(name, schema=None, specs=None) -> bytearray:
    """A provider object as the SDK writes it (a plain probe, a span), with ``schema(dict)`` (a
    dict or bytes) instead of the real schema and ``specs[probe]`` instead of the real specs."""
    p = Provider(name)
    p.add_probe("tick", n="u32", label=str)
    p.span_block("work", attributes={"what": str}, probe="work")
    arch = host_arch()
    sites = [ProbeSite(probe.name, (specs or {}).get(probe.name)
                       or [arch.arg_spec(i, a.type.size, a.type.signed) for i, a in enumerate(probe.args)])
             for probe in p.probes.values()]
    body = schema(p.schema()) if schema else p.schema()
    return bytearray(write_provider(name, sites, body if isinstance(body, bytes) else schema_mod.encode(body),
                                    arch).data)


def edited(change):
    def edit(schema):
        change(schema)
        return schema
    return edit


def patched(data: bytearray, fmt: str, offset: int, *values) -> bytearray:
    struct.pack_into(fmt, data, offset, *values)
    return data


def _note_header(data: bytearray) -> int:
    return data.index(b"stapsdt\0") - 12


def _corrupt_note(name: str) -> bytearray:
    data = craft(name)
    return patched(data, "<I", _note_header(data) + 4, 0xFFFF)


def _non_utf8_provider_in_notes(name: str) -> bytearray:
    data = craft(name)
    at = data.index(b"\0" + name.encode() + b"\0", data.index(b"stapsdt\0")) + 1
    data[at] = 0xFF
    return data


#: name -> (object, what the warning must say)
MALFORMED = {
    "corrupt_note": (_corrupt_note("corrupt_note"), "note extends past its section"),
    "huge_section_offset": (patched(craft("huge_section_offset"), "<Q", 40, 2**64 - 256), "truncated ELF"),
    "not_utf8_note": (_non_utf8_provider_in_notes("not_utf8_note"), "SDT note string is not UTF-8"),
    "type_lie": (craft("type_lie", edited(lambda s: s["probes"][0]["args"][0].update(type="str"))),
                 "probe tick cannot be traced: argument 0 is str in the schema but 4 bytes in the SDT note"),
    "count_lie": (craft("count_lie", edited(lambda s: s["probes"][0]["args"].append({"name": "x", "type": "u8"}))),
                  "the schema declares 3 arguments, the SDT note 2"),
    "huge_schema": (craft("huge_schema", edited(lambda s: s.update(padding="x" * (1 << 20)))),
                    "over the 1048576-byte limit"),
    "unknown_version": (craft("unknown_version", edited(lambda s: s.update(version=99))),
                        "schema version 99 is not supported"),
    "deep_schema": (craft("deep_schema", lambda s: b"[" * 5000 + b"]" * 5000), "schema nests too deeply"),
    "lone_surrogate": (craft("lone_surrogate", lambda s: json.dumps(
        edited(lambda s: s["probes"][0]["args"][1].update(name="label\ud800"))(s)).encode()),
        "a string that is not valid Unicode"),
    "bad_operand": (craft("bad_operand", specs={"tick": ["4@99999999999999999999(%rsp)", "8@%rsi"]}),
                    "is out of range for an argument operand"),
}


def assert_inert(text: str) -> None:
    """Nothing a terminal would interpret: every character printable, or a newline."""
    bad = sorted({c for c in text if c != "\n" and not c.isprintable()})
    assert not bad, "raw control characters reached the output: %r" % bad


def test_malformed_providers_are_refused_and_other_processes_traced(apps, tmp_path):
    good, bad = apps(), apps()
    good.send("load good")
    for name, (data, _) in MALFORMED.items():
        (tmp_path / name).write_bytes(data)
        assert bad.send("rawload %s" % (tmp_path / name))["loaded"], name
    # A memfd name is the process's to choose, and the tracer's warnings quote it.
    bad.send("rawload %s %s" % (tmp_path / "corrupt_note", ("evil" + HOSTILE).encode().hex()))
    tracer = jsonl_tracer(tmp_path, "--pid", str(good.pid), "--pid", str(bad.pid))
    try:
        # good: 6 sites; type_lie, count_lie, bad_operand: their span's one-hit probe (the probe lied
        # about is out)
        wait_attached(tracer, SITES + 3 * 1)
        good.send("spans good 3")
        assert wait_until(lambda: len(spans_of(tmp_path)) >= 9)
        assert tracer.stop() == 0, tracer.stderr
    finally:
        tracer.kill()
    for name, (_, reason) in MALFORMED.items():
        assert reason in tracer.stderr, (name, tracer.stderr)
    assert "Traceback" not in tracer.stderr
    assert "memfd:spanprobe:evil\\x1b[2J\\x1b]0;owned\\x07\\x9b31m\\u202eevil" in tracer.stderr
    assert_inert(tracer.stderr)
    spans, stats = spans_of(tmp_path), stats_of(tmp_path)
    assert {s["scope"] for s in spans} == {"good"} and len(spans) == 9
    assert stats["lost"] == 0 and stats["decode_errors"] == 0


def test_console_output_is_inert_and_bounded(apps, tmp_path):
    app = apps(env={"OTEL_SERVICE_NAME": "svc" + HOSTILE})
    app.send("load shop")
    app.send("hostile %s" % HOSTILE.encode().hex())
    tracer = Tracer("trace", "--pid", str(app.pid), "--duration", "60")
    try:
        wait_attached(tracer, SITES + 4)  # shop, and hostile's four: two spans' one-hit probes, an event, a probe
        app.send("fire_hostile")
        time.sleep(2.5)  # the console prints a trace when its root ends, or a second after its last span
        assert tracer.stop() == 0, tracer.stderr
    finally:
        tracer.kill()
    out = tracer.stdout + tracer.stderr
    print(out[:3000])
    assert_inert(out)
    # Everything arrived, escaped: span and event names, attributes, errors, the plain probe.
    for shown in ("span \\x1b[2J\\x1b]0;owned\\x07\\x9b31m\\u202eevil\\u2066\\r\\x08\\x7f",
                  "• event \\x1b[2J", 'text="\\x1b[2J', "ERROR ValueError: \\x1b[2J",
                  'label="\\x1b[2J', "svc\\x1b[2J", "hostile.tick", "GET /items"):
        assert shown in out, shown
    # A 50,000-character span name and 1,700-character attribute values are cut.
    assert max(len(line) for line in out.splitlines()) < 8000
