"""The provider object, read back with readelf and with our own reader, for both architectures."""

import shutil
import struct
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from spanprobe import Provider
from spanprobe.abi.types import ArgType
from spanprobe.errors import DeclarationError
from spanprobe.elf.arch import ARCHES
from spanprobe.elf.reader import ElfError, read_elf
from spanprobe.abi.schema import decode

TYPES = ["u8", "i16", "i32", "i64", "str", "f64", "i8", "u16", "u32", "u64", "str", "bool"]


def provider():
    p = Provider("elftest")
    p.add_probe("twelve", *[(f"a{i}", t) for i, t in enumerate(TYPES)])
    p.add_probe("none")
    return p


def test_x86_64_specs_registers_then_stack():
    info = read_elf(provider().build_image(ARCHES["x86_64"]).data)
    assert info.machine == 62
    twelve = {n.name: n for n in info.notes}["twelve"]
    assert twelve.args == ("1@%dil -2@%si -4@%edx -8@%rcx 8@%r8 8@%r9 -1@8(%rsp) 2@16(%rsp) "
                           "4@24(%rsp) 8@32(%rsp) 8@40(%rsp) 1@48(%rsp)")
    assert {n.name: n for n in info.notes}["none"].args == ""


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_views_carry_every_argument_past_the_sixth(arch):
    """A probe of more than six arguments gets a view per further six: the same site and
    semaphore, the probe's later argument specs (what stock tools read as arg0..)."""
    p = provider()
    p.add_probe("seven", *[(f"a{i}", "u64") for i in range(7)])
    p.add_probe("six", *[(f"a{i}", "u64") for i in range(6)])
    notes = {n.name: n for n in read_elf(p.build_image(ARCHES[arch]).data).notes}
    spec = ARCHES[arch].arg_spec
    for probe, view, nargs in (("twelve", "twelve__a6", 12), ("seven", "seven__a6", 7)):
        types = [ArgType(t) for t in TYPES] if probe == "twelve" else [ArgType("u64")] * 7
        assert notes[view].args == " ".join(spec(i, types[i].size, types[i].signed) for i in range(6, nargs))
        assert (notes[view].pc, notes[view].semaphore) == (notes[probe].pc, notes[probe].semaphore)
    assert sorted(notes) == ["none", "seven", "seven__a6", "six", "twelve", "twelve__a6"]


@pytest.mark.parametrize("name", ["x__a6", "work__start__a12"])
def test_view_names_are_reserved(name):
    with pytest.raises(DeclarationError, match="view"):
        Provider("elftest").add_probe(name, a="u64")


def test_aarch64_object_is_well_formed(tmp_path):
    image = provider().build_image(ARCHES["aarch64"])
    info = read_elf(image.data)
    assert info.machine == 183
    twelve = {n.name: n for n in info.notes}["twelve"]
    assert twelve.args == ("1@x0 -2@x1 -4@x2 -8@x3 8@x4 8@x5 -1@x6 2@x7 "
                           "4@[sp] 8@[sp, 8] 8@[sp, 16] 1@[sp, 24]")
    # the probe site is an A64 nop followed by ret, at the address the note names
    assert image.data[twelve.pc:twelve.pc + 8] == struct.pack("<II", 0xD503201F, 0xD65F03C0)
    # PT_LOADs are 64 KiB aligned so any aarch64 page size maps them
    for seg in image.segments:
        assert seg.offset % 0x10000 == seg.vaddr % 0x10000
    assert image.segments[1].vaddr % 0x10000 == 0
    assert decode(info.schema)["provider"] == "elftest"
    if shutil.which("readelf"):
        path = tmp_path / "libelftest-aarch64.so"
        path.write_bytes(image.data)
        out = subprocess.run(["readelf", "-h", "-n", "-l", str(path)], capture_output=True,
                             text=True, check=True).stdout
        assert "AArch64" in out and "Arguments: 1@x0 -2@x1" in out and "GNU_STACK" in out


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_semaphores_sit_in_a_writable_non_executable_load_segment(arch):
    image = provider().build_image(ARCHES[arch])
    info = read_elf(image.data)
    rw = [s for s in image.segments if s.flags == 6]  # PF_R | PF_W
    assert len(rw) == 1
    for note in info.notes:
        assert rw[0].vaddr <= note.semaphore < rw[0].vaddr + rw[0].size
        assert note.base == info.stapsdt_base


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096), st.integers(0, 4095))
def test_reader_survives_garbage(noise, at):
    data = bytearray(provider().build_image(ARCHES["x86_64"]).data)
    data[at:at + len(noise)] = noise
    try:
        read_elf(bytes(data))
    except ElfError:
        pass
