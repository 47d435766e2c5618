"""A provider object read and validated: its probes, where each sits, what its arguments are.

``build_image`` checks the schema (spanprobe.abi.schema, the SDK's own
validator) and then every probe against its SDT notes: the notes must exist,
agree with each other, carry as many arguments as the schema declares, each
of the declared size and sign, at locations this tracer can read. The
result, a ProviderImage, is everything the kernel stage needs to plan, render
and attach; it is immutable once built and shared by every process that maps
the same file.

Input is untrusted: a probe that fails a check is kept out of ``probes`` and
listed in ``broken`` with the reason (logged once, here), so one bad probe
does not cost the rest; so is a probe whose role this tracer does not know (a
newer SDK's: forward compatibility, docs/abi.md), all of them in one warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from spanprobe.abi import schema as schema_mod
from spanprobe.abi.types import ArgType
from spanprobe.elf.reader import ElfError, ElfProbes, SdtNote

from . import argspec

log = logging.getLogger("spanprobe.tracer")


@dataclass(frozen=True)
class ProbeLocation:
    """One probe site in a file: where the kernel must place the uprobe, and its semaphore."""

    offset: int           # file offset of the probe instruction
    semaphore: int        # file offset of the 16-bit semaphore, 0 if none


@dataclass
class ProbeInfo:
    """One probe of a provider, as its schema declares it and its notes place it."""

    name: str
    role: str
    args: List[Tuple[str, str]]                 # (name, type) from the schema
    specs: List[argspec.ArgLocation]            # where each argument is at the probe site
    locations: List[ProbeLocation]


@dataclass(eq=False)
class ProviderImage:
    """A provider object whose schema validated: everything needed to render and attach.

    Compared (and hashed) by identity: one object per file read, so whoever
    derives something from an image (a plan) can key a weak cache on it.
    """

    provider: str
    schema: dict
    machine: int
    probes: Dict[str, ProbeInfo]
    #: Probes that are declared but cannot be traced, with the reason (already logged).
    broken: Dict[str, str] = field(default_factory=dict)


def build_image(elf: ElfProbes, where: str) -> ProviderImage:
    """Validate a provider's schema against its notes. Raises SchemaError or ElfError.

    Probes whose notes are missing or disagree with the schema are kept out of
    ``probes`` and listed in ``broken``: one bad probe does not cost the rest.
    """
    unknown: Dict[str, str] = {}
    schema = schema_mod.decode(elf.schema, unknown_roles=unknown)
    provider = schema["provider"]
    if unknown:  # a newer SDK's probes: trace the rest, say once what is skipped (docs/abi.md)
        log.warning("%s: provider %s: %d probe(s) with a role this tracer does not know skipped (a newer SDK?): %s",
                    where, provider, len(unknown), ", ".join("%s (role %r)" % kv for kv in sorted(unknown.items())))
    by_name: Dict[str, List[SdtNote]] = {}
    for note in elf.notes:
        if note.provider == provider:
            by_name.setdefault(note.name, []).append(note)
    probes: Dict[str, ProbeInfo] = {}
    broken: Dict[str, str] = {}
    for entry in schema["probes"]:
        name = entry["name"]
        notes = by_name.get(name)
        args = [(a["name"], a["type"]) for a in entry["args"]]
        if not notes:
            broken[name] = "declared in the schema but has no SDT note"
            continue
        try:
            spec_texts = {n.args for n in notes}
            if len(spec_texts) != 1:
                raise argspec.ArgSpecError("its sites disagree on argument locations")
            spec_text = notes[0].args
            specs = [argspec.parse(s, elf.machine) for s in argspec.split_specs(spec_text)]
            if len(specs) != len(args):
                raise argspec.ArgSpecError("the schema declares %d arguments, the SDT note %d"
                                           % (len(args), len(specs)))
            for i, ((_, typ), spec) in enumerate(zip(args, specs)):
                declared = ArgType(typ)
                if (spec.size, spec.signed) != (declared.size, declared.signed):
                    raise argspec.ArgSpecError(
                        "argument %d is %s in the schema but %s%d bytes in the SDT note"
                        % (i, typ, "signed " if spec.signed else "", spec.size))
            locations = []
            for n in notes:
                locations.append(ProbeLocation(
                    elf.file_offset(elf.probe_pc(n)),
                    elf.file_offset(n.semaphore) if n.semaphore else 0))
        except (argspec.ArgSpecError, ElfError) as exc:
            broken[name] = str(exc)
            continue
        probes[name] = ProbeInfo(name, entry["role"], args, specs, locations)
    for name, reason in broken.items():
        log.warning("%s: provider %s: probe %s cannot be traced: %s", where, provider, name, reason)
    broken.update((name, "its role %r is unknown to this tracer" % role) for name, role in unknown.items())
    return ProviderImage(provider, schema, elf.machine, probes, broken)
