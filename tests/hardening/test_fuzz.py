"""Fuzzing the parsers that read what traced processes wrote, and replaying the corpus.

Targets, each allowed to fail only with its own error:

* ``elf``: a provider object, read by spanprobe.elf.reader, its schema
  checked against its notes (discover.build_image) and planned and rendered
  as BPF C (kernel.ProviderPlan, kernel.render_module):
  all of it pure Python, all of it what the tracer does with a mapped file
  before anything reaches the kernel. ElfError or SchemaError only.
* ``schema``: spanprobe.abi.schema.decode. SchemaError only.
* ``argspec``: SDT argument specs (discover.argspec.parse). ArgSpecError only.

The corpus (corpus/<target>/) holds seed inputs (``seed-``), every input
that ever broke a target (``crash-``) and inputs that must be refused
(``reject-``: a lone surrogate in a name, an unknown version...);
test_corpus replays all of it. A fuzz run that finds a new crasher writes it
there (crash-<hash>, with the steps of hypothesis's shrinking: keep the
smallest) before failing: fix the bug, keep the file. Seeds are made by
``python -m tests.hardening.test_fuzz --write-seeds`` (from the repository root).

CI runs a few hundred examples per target, derandomized; for a longer
search: ``SPANPROBE_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest
tests/hardening/test_fuzz.py`` (random, not derandomized).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import struct
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from spanprobe.abi import schema as schema_mod
from spanprobe.elf.arch import EM_AARCH64, EM_X86_64
from spanprobe.elf.reader import ElfError, read_probes
from spanprobe.errors import SchemaError
from spanprobe_tracer.discover import build_image
from spanprobe_tracer.discover.argspec import ArgSpecError, parse, split_specs
from spanprobe_tracer.kernel import CaptureConfig, ProviderPlan, render_module

CORPUS = Path(__file__).resolve().parent / "corpus"
EXAMPLES = int(os.environ.get("SPANPROBE_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize="SPANPROBE_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- targets ---------------------------------------------------------------------------

def elf_target(data: bytes) -> None:
    probes = read_probes(io.BytesIO(data))
    if probes.schema is not None:
        plan = ProviderPlan(build_image(probes, "fuzz"), CaptureConfig(), warn=lambda message: None)
        render_module(plan.layout, 1)


def argspec_target(data: bytes) -> None:
    for spec in split_specs(data.decode("utf-8", "replace")):
        for machine in (EM_X86_64, EM_AARCH64):
            parse(spec, machine)


TARGETS = {
    "elf": (elf_target, (ElfError, SchemaError)),
    "schema": (schema_mod.decode, SchemaError),
    "argspec": (argspec_target, ArgSpecError),
}


def check(target: str, data: bytes, save: bool = True) -> None:
    """Run ``target`` on ``data``; an unexpected exception saves ``data`` to the corpus (a new input
    found by fuzzing, not one replayed from it), then fails."""
    run, expected = TARGETS[target]
    try:
        run(data)
    except expected:
        pass
    except Exception:
        path = CORPUS / target / ("crash-%s" % hashlib.sha256(data).hexdigest()[:16])
        if save and not path.exists():
            path.write_bytes(data)
        raise


# --- corpus ------------------------------------------------------------------------------

def corpus(target: str):
    return sorted((CORPUS / target).iterdir())


@pytest.mark.parametrize("path", [p for t in TARGETS for p in corpus(t)], ids=lambda p: "%s/%s" % (p.parent.name, p.name))
def test_corpus(path):
    """Every input is handled; a ``reject-`` one must be refused with the target's own error."""
    target = path.parent.name
    if path.name.startswith("reject-"):
        run, expected = TARGETS[target]
        with pytest.raises(expected):
            run(path.read_bytes())
    else:
        check(target, path.read_bytes(), save=False)


def seeds(target: str):
    return [p.read_bytes() for p in corpus(target) if p.name.startswith("seed")]


def test_seeds_are_valid():
    """The seeds are real providers: the mutations start from something every target accepts."""
    for data in seeds("elf"):
        image = build_image(read_probes(io.BytesIO(data)), "seed")
        assert image.probes and not image.broken
    for data in seeds("schema"):
        schema_mod.decode(data)


# --- strategies ----------------------------------------------------------------------------

INTERESTING = [0, 1, 2, 7, 8, 0x40, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**63 - 1, 2**64 - 1]


def _regions(data: bytes):
    """Where mutations matter most: the ELF header, the section header table, the note sections."""
    regions = [(0, 64)]
    shoff, = struct.unpack_from("<Q", data, 40)
    shnum, = struct.unpack_from("<H", data, 60)
    regions.append((shoff, len(data)))
    for i in range(shnum):
        stype, offset, size = struct.unpack_from("<I12xQQ", data, shoff + i * 64 + 4)
        if stype == 7:
            regions.append((offset, offset + size))
    return regions


@st.composite
def mutated(draw, seed_list):
    data = bytearray(draw(st.sampled_from(seed_list)))
    regions = _regions(bytes(data)) if data[:4] == b"\x7fELF" else [(0, len(data))]
    for _ in range(draw(st.integers(1, 6))):
        lo, hi = draw(st.sampled_from(regions))
        pos = draw(st.integers(lo, max(lo, min(hi, len(data)) - 1)))
        kind = draw(st.sampled_from(["byte", "word", "cut", "insert", "delete"]))
        if kind == "byte":
            data[pos:pos + 1] = bytes([draw(st.integers(0, 255))])
        elif kind == "word":
            size = draw(st.sampled_from([2, 4, 8]))
            value = draw(st.sampled_from(INTERESTING)) & ((1 << 8 * size) - 1)
            data[pos:pos + size] = value.to_bytes(size, "little")
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[pos:pos + draw(st.integers(1, 16))]
    return bytes(data)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from(["span_start", "span_end", "event", "plain", "str", "u64", "req_start", "spanprobe.schema"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@st.composite
def schema_edits(draw):
    """A valid schema with one subtree replaced by arbitrary JSON."""
    holder = {"root": json.loads(draw(st.sampled_from(seeds("schema"))))}
    node, key = holder, "root"
    while isinstance(node[key], (dict, list)) and node[key] and draw(st.booleans()):
        node = node[key]
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
    node[key] = draw(JSON)
    return json.dumps(holder["root"]).encode()


SPEC_TEXT = st.text(alphabet="-0123456789@%()$[]#,x sprdibacl8wq\t٣", max_size=24)


# --- fuzzing ---------------------------------------------------------------------------------

@FUZZ
@given(data=st.one_of(mutated(seeds("elf")), st.binary(max_size=256)))
def test_fuzz_provider_objects(data):
    check("elf", data)


@FUZZ
@given(data=st.one_of(schema_edits(), mutated(seeds("schema")), st.binary(max_size=64)))
def test_fuzz_schema(data):
    check("schema", data)


@FUZZ
@given(data=st.one_of(SPEC_TEXT.map(str.encode), st.binary(max_size=32)))
def test_fuzz_argspecs(data):
    check("argspec", data)


# --- seeds -------------------------------------------------------------------------------------

def write_seeds() -> None:
    """Seed inputs from real providers: the demo apps' (spans, events, a plain probe), both arches."""
    importlib.import_module("demo_apps.asyncjobs.jobs")  # declares the asyncjobs spans
    from demo_apps.asyncjobs.probes import provider as asyncjobs
    from demo_apps.simplehttp.probes import provider as simplehttp
    from spanprobe.elf.arch import ARCHES

    for target in ("elf", "schema", "argspec"):
        (CORPUS / target).mkdir(parents=True, exist_ok=True)
    specs = set()
    for provider, arches in ((asyncjobs, ["x86_64"]), (simplehttp, ["x86_64", "aarch64"])):
        for arch in map(ARCHES.get, arches):
            image = provider.build_image(arch)
            (CORPUS / "elf" / ("seed-%s-%s.elf" % (provider.name, arch.name))).write_bytes(image.data)
            specs.update(arch.arg_spec(i, a.type.size, a.type.signed)
                         for p in provider.probes.values() for i, a in enumerate(p.args))
        (CORPUS / "schema" / ("seed-%s.json" % provider.name)).write_bytes(schema_mod.encode(provider.schema()))
    (CORPUS / "argspec" / "seed-sdk-specs.txt").write_text(" ".join(sorted(specs)) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-seeds"]:
        write_seeds()
