"""aarch64 on this x86_64 machine: qemu-user, an arm64 Python, the cross toolchain, software uprobes.

``scripts/setup.sh --aarch64`` (run by scripts/test.sh) installs Debian's qemu-user,
gcc-aarch64-linux-gnu, systemtap-sdt-dev:arm64 and libpython3.11:arm64, and builds
``.venvs/aarch64/bin/python3.11``. There is no BPF under emulation: probe sites are
trapped in the process itself (trap.c), where the tracer's rendered C reads the
arguments from the register state of the site, as a uprobe program would.

A test that needs any of it calls ``require_emulation()``: it skips when something is
missing, and fails instead in CI (CI=true) or under SPANPROBE_REQUIRE_BPF=1.
"""

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import List, Optional, Sequence

import pytest

from spanprobe.elf.arch import ARCHES
from spanprobe_tracer.discover import argspec
from spanprobe_tracer.kernel.render import render_read

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
TRAP_C = os.path.join(HERE, "trap.c")
PROVIDER_APP = os.path.join(HERE, "provider_app.py")
PYTHON = os.path.join(ROOT, ".venvs", "aarch64", "bin", "python3.11")
QEMU = "qemu-aarch64"
CC = "aarch64-linux-gnu-gcc"
READELF = "aarch64-linux-gnu-readelf"
OBJDUMP = "aarch64-linux-gnu-objdump"
#: Debian's multiarch include directory of systemtap-sdt-dev:arm64 (sys/sdt.h).
SDT_INCLUDE = "/usr/include/aarch64-linux-gnu"
EM_AARCH64 = ARCHES["aarch64"].elf_machine
#: readers.h argument kinds (trap.c): what the trap copies from behind a pointer.
KINDS = {"str": 1, "bytes": 2}
MAX_ARGS = 12


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def emulation_problem() -> Optional[str]:
    """What is missing to run aarch64 code here, or None."""
    for tool in (QEMU, CC, READELF, OBJDUMP):
        if shutil.which(tool) is None:
            return "%s not found (scripts/setup.sh --aarch64 installs it)" % tool
    if not os.path.isfile(os.path.join(SDT_INCLUDE, "sys", "sdt.h")):
        return "%s/sys/sdt.h missing (systemtap-sdt-dev:arm64; scripts/setup.sh --aarch64)" % SDT_INCLUDE
    if not os.access(PYTHON, os.X_OK):
        return "%s missing (scripts/setup.sh --aarch64 builds it)" % PYTHON
    return None


def require_emulation() -> None:
    """Skip when aarch64 emulation is missing; fail in CI and under SPANPROBE_REQUIRE_BPF=1."""
    if _flag("SPANPROBE_SDK_MATRIX") and not _flag("SPANPROBE_REQUIRE_BPF"):
        pytest.skip("aarch64 emulation runs once, in the main run (not in the SDK matrix)")
    problem = emulation_problem()
    if problem is None:
        return
    if _flag("CI") or _flag("SPANPROBE_REQUIRE_BPF"):
        pytest.fail("aarch64 emulation missing in CI: %s" % problem, pytrace=False)
    pytest.skip("aarch64 emulation missing: %s" % problem)


def run(*argv: str, **kwargs) -> str:
    """Run a tool; its stdout, or an AssertionError quoting its stderr."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)
    assert proc.returncode == 0, "%s failed (exit %d):\n%s%s" % (
        " ".join(argv), proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.stdout


# --- the tracer's reads, rendered into trap.c's readers.h ------------------------------

def render_readers(probes: Sequence[Sequence[argspec.ArgLocation]],
                   kinds: Sequence[Sequence[str]] = ()) -> str:
    """readers.h for trap.c: one reader per probe, made of the tracer's render_read() of each spec.

    ``kinds[i][j]`` is the schema type of argument j of probe i ("str" and "bytes" make the
    trap copy what the pointer points to); missing entries are plain words.
    """
    lines = ["#define SP_NPROBES %d" % len(probes), "#define SP_MAX_ARGS %d" % MAX_ARGS]
    for i, locs in enumerate(probes):
        assert len(locs) <= MAX_ARGS
        lines.append("static void sp_read%d(struct pt_regs *ctx, u64 *w, u32 *fail) {" % i)
        for j, loc in enumerate(locs):
            lines.append("    " + render_read(loc, EM_AARCH64, "w[%d]" % j, "*fail |= 1u << %d;" % j))
        lines.append("}")
    lines.append("static void (*const sp_readers[SP_NPROBES])(struct pt_regs *, u64 *, u32 *) = {%s};"
                 % ", ".join("sp_read%d" % i for i in range(len(probes))))
    rows = []
    for i in range(len(probes)):
        row = list(kinds[i]) if i < len(kinds) else []
        rows.append("{%s}" % ", ".join(str(KINDS.get(t, 0)) for t in row + [""] * (MAX_ARGS - len(row))))
    lines.append("static const unsigned char sp_kinds[SP_NPROBES][SP_MAX_ARGS] = {%s};" % ", ".join(rows))
    return "\n".join(lines) + "\n"


def build_trap(workdir: str, readers_h: str, *sources: str, shared: bool = False) -> str:
    """Compile trap.c with ``readers_h``: a shared library, or a static program with ``sources``."""
    with open(os.path.join(workdir, "readers.h"), "w") as f:
        f.write(readers_h)
    out = os.path.join(workdir, "libtrap.so" if shared else "traced")
    flags = ["-shared", "-fPIC"] if shared else ["-static", "-DSP_TRAP_MAIN"]
    run(CC, "-O2", "-Wall", "-Werror", "-I", workdir, "-idirafter", SDT_INCLUDE, *flags,
        "-o", out, TRAP_C, *sources)
    return out


@dataclass
class Record:
    """One trapped probe hit: the words the rendered reads produced, and what pointers pointed to."""

    probe: int
    fail: int
    words: List[int]
    data: List[bytes]


def parse_records(lines: Sequence[str]) -> List[Record]:
    """trap.c's dump, through its closing count line (which must say nothing overflowed)."""
    records = []
    for line in lines:
        obj = json.loads(line)
        if "records" in obj:
            assert obj["overflow"] == 0 and obj["records"] == len(records), obj
            return records
        records.append(Record(obj["probe"], obj["fail"], obj["words"],
                              [bytes.fromhex(d) for d in obj["data"]]))
    raise AssertionError("the trap dump has no closing line")


def spec_value(word: int, loc: argspec.ArgLocation) -> int:
    """The value an SDT argument spec gives a raw 64-bit word: its ``size`` low bytes, signed if ``-``."""
    bits = 8 * loc.size
    value = word & ((1 << bits) - 1)
    return value - (1 << bits) if loc.signed and value >> (bits - 1) else value
