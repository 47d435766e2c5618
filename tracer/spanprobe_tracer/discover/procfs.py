"""What the tracer learns about other processes from /proc.

Everything here reads files that belong to processes we do not control and
that may exit at any moment, so every function tolerates the process
vanishing (ProcessGone) and never trusts what it reads further than parsing.

A process is identified by (pid, start time): pids are reused, and a tracer
that runs for days must not mistake a new process for an old one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

PROC = "/proc"


class ProcessGone(Exception):
    """The process exited (or was never there) while we were looking at it."""


@dataclass(frozen=True)
class Mapping:
    """One line of /proc/PID/maps."""

    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    path: str

    @property
    def range_name(self) -> str:
        """The entry name of this mapping under /proc/PID/map_files/."""
        return "%x-%x" % (self.start, self.end)

    @property
    def deleted(self) -> bool:
        return self.path.endswith(" (deleted)")

    @property
    def clean_path(self) -> str:
        return self.path[: -len(" (deleted)")] if self.deleted else self.path


_MAPS_LINE = re.compile(
    r"([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s*(.*)\Z")


def parse_maps(text: str) -> List[Mapping]:
    mappings = []
    for line in text.splitlines():
        m = _MAPS_LINE.match(line)
        if not m:
            continue
        mappings.append(Mapping(int(m.group(1), 16), int(m.group(2), 16), m.group(3),
                                int(m.group(4), 16), m.group(5), int(m.group(6)), m.group(7)))
    return mappings


def _read(pid: int, name: str, binary: bool = False):
    path = "%s/%d/%s" % (PROC, pid, name)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(pid) from None
    except OSError as exc:
        # ESRCH shows up as a plain OSError on some files of a dying process.
        if exc.errno == 3:
            raise ProcessGone(pid) from None
        raise
    return data if binary else data.decode("utf-8", "replace")


def maps_text(pid: int) -> str:
    """/proc/PID/maps as it reads now (the scanner compares it with its last read)."""
    return _read(pid, "maps")


def maps(pid: int) -> List[Mapping]:
    return parse_maps(maps_text(pid))


def start_time(pid: int) -> int:
    """The process start time in clock ticks after boot (field 22 of stat)."""
    stat = _read(pid, "stat")
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = stat[stat.rindex(")") + 2:].split()
    return int(rest[19])


def parent_pid(pid: int) -> int:
    stat = _read(pid, "stat")
    return int(stat[stat.rindex(")") + 2:].split()[1])


def state(pid: int) -> str:
    stat = _read(pid, "stat")
    return stat[stat.rindex(")") + 2:].split()[0]


def comm(pid: int) -> str:
    return _read(pid, "comm").rstrip("\n")


def cmdline(pid: int) -> List[str]:
    raw = _read(pid, "cmdline", binary=True)
    parts = raw.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return [p.decode("utf-8", "replace") for p in parts]


def environ(pid: int) -> Dict[str, str]:
    """The process's initial environment (what it was started with).

    Needs the same rights as ptrace-reading the process (root has them).
    Returns {} when the kernel refuses, rather than failing the whole trace.
    """
    try:
        raw = _read(pid, "environ", binary=True)
    except PermissionError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        if b"=" in item:
            key, _, value = item.partition(b"=")
            env[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


def exe(pid: int) -> Optional[str]:
    try:
        return os.readlink("%s/%d/exe" % (PROC, pid))
    except FileNotFoundError:
        raise ProcessGone(pid) from None
    except OSError:
        return None  # kernel threads, or not ours to look at


def uid(pid: int) -> int:
    try:
        return os.stat("%s/%d" % (PROC, pid)).st_uid
    except FileNotFoundError:
        raise ProcessGone(pid) from None


def alive(pid: int, started: Optional[int] = None) -> bool:
    """Is ``pid`` running, and (when ``started`` is given) still the same process?

    A zombie (exited, not yet reaped by its parent) is not alive: it runs no
    code and its memory map is gone.
    """
    try:
        stat = _read(pid, "stat")
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] in ("Z", "X"):
            return False
        return started is None or int(fields[19]) == started
    except (ProcessGone, ValueError, IndexError):
        return False
    except OSError:
        return False


def pids() -> Iterator[int]:
    """Every process (not thread) currently on the host, as seen in our pid namespace."""
    for entry in os.listdir(PROC):
        if entry.isdigit():
            yield int(entry)


def map_file_path(pid: int, mapping: Mapping) -> str:
    """A path the kernel resolves to the file behind ``mapping``, even if deleted or a memfd."""
    return "%s/%d/map_files/%s" % (PROC, pid, mapping.range_name)


def root_path(pid: int, path: str) -> str:
    """``path`` as the process sees it (through its mount namespace and chroot)."""
    return "%s/%d/root%s" % (PROC, pid, path)
