"""The SDK on aarch64 for real: Debian's arm64 Python under qemu-user loads and fires a provider.

support/aarch64/provider_app.py declares a probe of every role and argument type and loads
the provider in the arm64 Python (.venvs/aarch64, qemu-aarch64). From outside, as a tracer
would, the test finds the provider in the process with the tracer's own discovery, sets
and clears semaphores through /proc/PID/mem (what the kernel's uprobe reference counter
does), and checks the object with the aarch64 binutils. There is no BPF under emulation:
each probe site is trapped in the process (support/aarch64/trap.c), where the tracer's
rendered C reads the arguments from the site's registers and stack, so the values must
arrive exactly where the SDT notes say they are.
"""

import json
import math
import re
import struct

import pytest

from spanprobe.abi.protocol import PROBE_ROLES, ROLE_SPAN, payload_format, payload_words, view_of, views
from spanprobe.abi.types import ArgType
from spanprobe_tracer.discover import argspec, procfs
from spanprobe_tracer.discover.scan import Scanner
from tests.support import Lines, semaphores
from tests.support import aarch64 as a64
from tests.support.aarch64.provider_app import EXPECTED, PROVIDER

pytestmark = pytest.mark.usefixtures("emulation")


@pytest.fixture(scope="module")
def emulation():
    a64.require_emulation()


@pytest.fixture(scope="module")
def app(emulation):
    app = Lines([a64.QEMU, a64.PYTHON, "-I", a64.PROVIDER_APP])
    hello = json.loads(app.next(60))
    yield app, hello
    if app.proc.poll() is None:
        app.proc.kill()
        app.wait()


@pytest.fixture(scope="module")
def provider(app):
    """The provider as the tracer's discovery finds it, and the addresses of its sites and semaphores."""
    lines, hello = app
    pid = lines.proc.pid
    found = [p for p in Scanner().scan(pid).providers if p.image.provider == PROVIDER]
    assert len(found) == 1, "the tracer does not find provider %s in pid %d" % (PROVIDER, pid)
    instance = found[0]
    mappings = [m for m in procfs.maps(pid) if (m.dev, m.inode) == instance.key]

    def address(offset):
        for m in mappings:
            if m.offset <= offset < m.offset + (m.end - m.start):
                return m.start + offset - m.offset
        raise AssertionError("file offset %#x of %s is not mapped" % (offset, instance.display_path))

    names = sorted(instance.image.probes)
    sites = {n: address(instance.image.probes[n].locations[0].offset) for n in names}
    sems = {n: address(instance.image.probes[n].locations[0].semaphore) for n in names}
    return instance, names, sites, sems


def fire(lines):
    lines.proc.stdin.write("fire\n")
    lines.proc.stdin.flush()
    enabled = json.loads(lines.next(60))["enabled"]
    records = []
    while True:
        line = lines.next(60)
        records.append(line)
        if '"records"' in line:
            return enabled, a64.parse_records(records)


def set_semaphores(pid, addresses, value):
    """What the kernel does for a uprobe with a reference counter: write the counter in the process."""
    with open("/proc/%d/mem" % pid, "r+b", buffering=0) as mem:
        for addr in addresses:
            mem.seek(addr)
            mem.write(struct.pack("<H", value))


def decode(typ, word, loc, data):
    """An argument's value from the word the rendered C read (and the bytes its pointer showed)."""
    if typ == "str":
        return data.decode("utf-8")
    if typ == "bytes":
        return data
    if typ == "f64":
        return struct.unpack("<d", struct.pack("<Q", word))[0]
    value = a64.spec_value(word, loc)
    return bool(value) if typ == "bool" else value


def test_the_arm64_python_loads_real_probes(app):
    lines, hello = app
    assert hello["machine"] == "aarch64" and hello["usdt_active"] is True
    assert hello["pid"] == lines.proc.pid


def test_the_tracer_finds_every_probe(app, provider):
    _, hello = app
    instance, names, _, _ = provider
    assert instance.image.machine == a64.EM_AARCH64
    assert instance.image.broken == {}
    assert {n: p.role for n, p in instance.image.probes.items()} == hello["roles"]
    assert set(hello["roles"].values()) == set(PROBE_ROLES), "the application fires every role"


def test_binutils_read_the_loaded_object(app, provider, tmp_path):
    """readelf and objdump for aarch64 on the very object the emulated process mapped."""
    lines, _ = app
    instance, names, _, _ = provider
    path = tmp_path / "provider.so"
    with open(instance.attach_path, "rb") as f:
        path.write_bytes(f.read())
    notes = a64.run(a64.READELF, "--notes", str(path))
    found = re.findall(r"Provider: (\S+)\s+Name: (\S+)\s+Location: (0x[0-9a-f]+), Base: (0x[0-9a-f]+), "
                       r"Semaphore: (0x[0-9a-f]+)\s+Arguments: ?(.*)\n", notes)
    # every probe, and a view (the same site, arguments 6-11: docs/abi.md "Views") for each of more than six
    assert sorted(f[1] for f in found if not view_of(f[1])) == names and {f[0] for f in found} == {PROVIDER}
    assert sorted(f[1] for f in found if view_of(f[1])) == sorted(
        v for n in names for v, _ in views(n, len(instance.image.probes[n].args)))
    base = re.search(r"\.stapsdt\.base\s+PROGBITS\s+([0-9a-f]+)", a64.run(a64.READELF, "-SW", str(path)))
    segments = re.findall(r"LOAD\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)\s+"
                          r"(0x[0-9a-f]+)\s+(.{3})", a64.run(a64.READELF, "-lW", str(path)))
    disassembly = a64.run(a64.OBJDUMP, "-d", str(path))
    for _, name, pc, note_base, sem, args in found:
        pc, sem = int(pc, 16), int(sem, 16)
        name, first = view_of(name) or (name, 0)
        assert int(note_base, 16) == int(base.group(1), 16), name
        # The semaphore is in a writable, non-executable segment that the file backs.
        holders = [s for s in segments if int(s[1], 16) <= sem < int(s[1], 16) + int(s[2], 16)]
        assert [s[4] for s in holders] == ["RW "], (name, segments)
        # The site is a function's first instruction, a nop, then ret: the arguments are where
        # the AAPCS64 call put them, x0..x7 and then 8-byte stack slots from sp.
        site = re.search(r"^0*%x <%s_%s>:\n\s*%x:\s+d503201f\s+nop\n\s*%x:\s+d65f03c0\s+ret\b"
                         % (pc, PROVIDER, re.escape(name), pc, pc + 4), disassembly, re.M)
        assert site, "probe %s: no `nop; ret` function at %#x" % (name, pc)
        for i, spec in enumerate(argspec.split_specs(args), start=first):
            operand = spec.split("@", 1)[1]
            assert operand == ("x%d" % i if i < 8 else "[sp, %d]" % (8 * (i - 8)) if i > 8 else "[sp]"), (name, args)


def test_semaphores_set_from_outside_turn_the_probes_on(app, provider, tmp_path):
    lines, _ = app
    instance, names, sites, sems = provider
    pid = lines.proc.pid
    image = instance.image
    readers = a64.render_readers([image.probes[n].specs for n in names],
                                 [[t for _, t in image.probes[n].args] for n in names])
    lib = a64.build_trap(str(tmp_path), readers, shared=True)
    lines.proc.stdin.write("arm %s %s\n" % (lib, " ".join("%#x:%d" % (sites[n], i) for i, n in enumerate(names))))
    lines.proc.stdin.flush()
    assert json.loads(lines.next(60)) == {"armed": len(names), "failed": []}

    # Nobody attached: every semaphore reads 0, inside and out, and no site is reached.
    assert set(semaphores(pid, PROVIDER).values()) == {0}
    enabled, records = fire(lines)
    assert set(enabled.values()) == {0} and records == []

    set_semaphores(pid, sems.values(), 1)
    assert set(semaphores(pid, PROVIDER).values()) == {1}
    enabled, records = fire(lines)
    assert enabled == {n: 1 for n in names}
    hits = {n: sum(1 for r in records if names[r.probe] == n) for n in names}
    assert hits == {n: 1 for n in names}, "every probe fired once while its semaphore was set"
    seen = {}
    spans = {e["span"]: e for e in image.schema["spans"] if "span" in e}
    for r in records:
        probe = image.probes[names[r.probe]]
        assert r.fail == 0, "probe %s: the tracer's reads failed (bits %#x)" % (probe.name, r.fail)
        if probe.role == ROLE_SPAN:  # a whole span in one value: its layout from its start and end probes
            entry = spans[probe.name]
            start, end = ([ArgType(t) for _, t in image.probes[entry[k]].args] for k in ("start", "end"))
            data = r.data[0]
            assert len(data) == struct.calcsize(payload_format(start, end))
            words = struct.unpack(payload_format(start, end), data)[1:]
            first_start, first_end = payload_words(len(start))
            assert words[0] and words[first_start] == words[first_end] != 0, "start time, span id twice"
            continue
        for (arg, typ), word, loc, data in zip(probe.args, r.words, probe.specs, r.data):
            if arg in EXPECTED:
                seen[arg] = decode(typ, word, loc, data)
    assert seen.keys() == EXPECTED.keys(), "attributes no probe carried: %s" % (EXPECTED.keys() - seen.keys())
    for arg, want in EXPECTED.items():
        got = seen[arg]
        same = (math.copysign(1, got) == math.copysign(1, want) and got == want) if isinstance(want, float) else (
            got == want and type(got) is type(want))
        assert same, "attribute %s: the tracer reads %r, the application passed %r" % (arg, got, want)

    # Detached again: the probes go quiet.
    set_semaphores(pid, sems.values(), 0)
    enabled, records = fire(lines)
    assert set(enabled.values()) == {0} and records == []

    lines.proc.stdin.write("exit\n")
    lines.proc.stdin.flush()
    assert json.loads(lines.next(60)) == {"bye": True}
    assert lines.wait(60) == 0
