"""Foreign aarch64 probes: notes from the real sys/sdt.h, read by the tracer's parser and its C.

aarch64_probes.c is compiled for aarch64 by Debian's cross GCC with systemtap-sdt-dev:arm64's
sys/sdt.h. The tracer parses each note's argument specs (argspec.parse) and renders the C
that reads them (kernel.render.render_read); that C is compiled into trap.c, which traps each
probe site in the running program (qemu-aarch64) and runs it on the site's registers. The
values must be the ones the program passed, for registers, memory and constants of every
size and sign. The notes and sites are also checked with the aarch64 binutils.
"""

import json
import os
import re

import pytest

from spanprobe.elf.reader import read_elf
from spanprobe_tracer.discover import argspec
from tests.support import aarch64 as a64

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "aarch64_probes.c")


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """(program, notes by probe, parsed specs by probe, trapped records by probe, values passed by probe)."""
    a64.require_emulation()
    work = str(tmp_path_factory.mktemp("a64-foreign"))
    obj = os.path.join(work, "probes.o")
    a64.run(a64.CC, "-O2", "-c", "-idirafter", a64.SDT_INCLUDE, "-o", obj, SOURCE)
    with open(obj, "rb") as f:
        compiled = read_elf(f.read()).notes
    order = [n.name for n in compiled]
    locations = {n.name: [argspec.parse(s, a64.EM_AARCH64) for s in argspec.split_specs(n.args)]
                 for n in compiled}
    # The readers come from the notes of the object; linking moves code, not operands.
    program = a64.build_trap(work, a64.render_readers([locations[name] for name in order]), obj)
    with open(program, "rb") as f:
        linked = read_elf(f.read()).notes
    assert [(n.name, n.args) for n in linked] == [(n.name, n.args) for n in compiled]
    notes = {n.name: n for n in linked}
    out = a64.run(a64.QEMU, program, *["%#x" % notes[name].pc for name in order]).splitlines()
    passed = {}
    dump = []
    for line in out:
        said = json.loads(line)
        if "passed" in said:
            passed[said["passed"]] = said["values"]
        else:
            dump.append(line)
    records = {}
    for r in a64.parse_records(dump):
        records.setdefault(order[r.probe], []).append(r)
    return program, notes, locations, records, passed


def test_gcc_made_every_operand_kind(traced):
    """The program covers what the test claims: registers, memory (sp and below a register), constants."""
    _, notes, locations, _, _ = traced
    assert sorted(notes) == ["below", "consts", "frame", "regs"]
    locs = [loc for probe in locations.values() for loc in probe]
    assert {(loc.size, loc.signed) for loc in locs if loc.kind == "reg"} == {
        (s, sign) for s in (1, 2, 4, 8) for sign in (False, True)}
    assert any(loc.kind == "mem" and loc.reg == "sp" and loc.offset > 0 for loc in locs)
    assert any(loc.kind == "mem" and loc.reg != "sp" and loc.offset < 0 for loc in locs)
    assert {loc.kind for loc in locations["consts"]} == {"imm"}
    assert re.search(r"\[sp, \d+\]", notes["frame"].args) and "[x0, -8]" in notes["below"].args


@pytest.mark.parametrize("probe", ["regs", "below", "frame", "consts"])
def test_the_tracers_reads_give_what_the_program_passed(traced, probe):
    _, notes, locations, records, passed = traced
    assert len(records.get(probe, [])) == 1, "probe %s: %d hits trapped, 1 fired" % (
        probe, len(records.get(probe, [])))
    record = records[probe][0]
    assert record.fail == 0, "probe %s: reads failed (bits %#x)" % (probe, record.fail)
    got = [a64.spec_value(word, loc) for word, loc in zip(record.words, locations[probe])]
    assert got == passed[probe], "probe %s, specs %r" % (probe, notes[probe].args)


def test_binutils_see_each_note_at_a_nop(traced):
    program, notes, _, _, _ = traced
    text = a64.run(a64.READELF, "--notes", program)
    for name, note in notes.items():
        assert re.search(r"Provider: foreign\s+Name: %s\s+Location: %#018x, Base: %#018x, "
                         r"Semaphore: 0x0+\s+Arguments: %s\n" % (name, note.pc, note.base, re.escape(note.args)),
                         text), name
    sections = a64.run(a64.READELF, "-SW", program)
    base = re.search(r"\.stapsdt\.base\s+PROGBITS\s+([0-9a-f]+)", sections)
    assert base and all(n.base == int(base.group(1), 16) for n in notes.values())
    disassembly = a64.run(a64.OBJDUMP, "-d", program)
    for name, note in notes.items():
        assert re.search(r"^\s*%x:\s+d503201f\s+nop\b" % note.pc, disassembly, re.M), name
