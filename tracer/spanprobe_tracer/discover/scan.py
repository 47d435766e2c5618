"""Finding providers in running processes: spanprobe providers and plain USDT libraries.

A process's memory map lists every file it has mapped, including the SDK's
providers (a memfd, ``/memfd:spanprobe:NAME (deleted)``, or a file in a
private ``spanprobe-PID-XXXX`` directory). Each distinct ELF file in the map is
looked at once (cached by inode and modification time): one that carries a
spanprobe schema note is a *provider* and can be traced with no configuration;
one with only SDT notes is a plain USDT library, listed but not traced.

Everything read here is untrusted. A provider whose ELF or schema is malformed
or of an unknown version is reported once and skipped; other providers, and
other processes, keep being traced. A process that exits mid-scan is simply
gone.

Rescanning is cheap when nothing changed: a process whose maps read back
identical to the previous scan is not looked at further.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

from spanprobe.abi.protocol import is_provider_mapping
from spanprobe.elf.reader import ElfError, SdtNote, read_probes
from spanprobe.errors import SchemaError

from ..text import MAX_MESSAGE, safe_text
from . import procfs
from .images import ProviderImage, build_image

log = logging.getLogger("spanprobe.tracer")

#: Mappings that are never ELF files worth opening.
_PSEUDO_PREFIXES = ("[", "anon_inode:", "/dev/", "/SYSV", "socket:", "pipe:")


@dataclass(frozen=True)
class ProviderInstance:
    """A provider as loaded in one process."""

    pid: int
    image: ProviderImage
    attach_path: str      # a path the kernel resolves to the provider's file
    key: Tuple[str, int]  # (dev, inode) of the file: identity within the process
    display_path: str


@dataclass(frozen=True)
class UsdtLibrary:
    """An ELF file with SDT notes but no spanprobe schema: listed, not traced."""

    path: str
    notes: List[SdtNote]


@dataclass
class ProcessScan:
    pid: int
    started: int
    providers: List[ProviderInstance]
    usdt: List[UsdtLibrary]


class _NotAProvider:
    """Cache marker: this file has no spanprobe schema (maybe plain USDT notes)."""

    def __init__(self, notes: List[SdtNote]):
        self.notes = notes


def _candidate_files(mappings: Iterable[procfs.Mapping]) -> Dict[Tuple[str, int], procfs.Mapping]:
    """The first (offset 0) mapping of each distinct file: where its ELF header is."""
    files: Dict[Tuple[str, int], procfs.Mapping] = {}
    for m in mappings:
        if not m.path or m.inode == 0 or m.path.startswith(_PSEUDO_PREFIXES):
            continue
        key = (m.dev, m.inode)
        if m.offset == 0 and key not in files:
            files[key] = m
    return files


class Scanner:
    """Scans processes for providers, remembering what it has already read.

    ``warn`` receives each problem once (per file), so a malformed provider in
    a process that is rescanned every half second is reported once, escaped
    and capped (it quotes what the process wrote: its file names, its schema).

    Cached files are reference-counted by the processes that map them and
    dropped with the last one (``forget``): on a host where short-lived
    processes each load their own provider, memory stays flat.
    """

    def __init__(self, include_usdt: bool = False, warn: Optional[Callable[[str], None]] = None):
        self.include_usdt = include_usdt
        self._warn = (lambda message: warn(safe_text(message, MAX_MESSAGE))) if warn else log.warning
        self._warned: Set[str] = set()
        self._files: Dict[tuple, object] = {}
        self._refs: Dict[tuple, int] = {}
        self._pid_keys: Dict[int, Set[tuple]] = {}
        self._last: Dict[int, Tuple[int, bytes, ProcessScan]] = {}

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._warn(message)

    def forget(self, pid: int) -> None:
        """Drop what only ``pid`` used (call when the process exited or is no longer a target)."""
        self._last.pop(pid, None)
        self._set_keys(pid, set())

    def retain(self, pids) -> None:
        """Forget every process not in ``pids`` (those that exited or are no longer targets)."""
        keep = set(pids)
        for pid in [p for p in set(self._last) | set(self._pid_keys) if p not in keep]:
            self.forget(pid)

    def _set_keys(self, pid: int, keys: Set[tuple]) -> None:
        old = self._pid_keys.pop(pid, set())
        for key in keys - old:
            self._refs[key] = self._refs.get(key, 0) + 1
        for key in old - keys:
            n = self._refs.get(key, 0) - 1
            if n <= 0:
                self._refs.pop(key, None)
                self._files.pop(key, None)
            else:
                self._refs[key] = n
        if keys:
            self._pid_keys[pid] = keys

    @property
    def files_cached(self) -> int:
        """Files whose reading (a provider image, or "not a provider") is kept."""
        return len(self._files.keys() | self._refs.keys())

    @property
    def processes_known(self) -> int:
        """Processes whose last scan (and the files they map) the scanner remembers."""
        return len(self._last.keys() | self._pid_keys.keys())

    def scan(self, pid: int, fresh: bool = False) -> ProcessScan:
        """Providers (and, if asked, plain USDT libraries) in ``pid``. Raises ProcessGone.

        A process whose memory map reads back as it did on the last scan gets
        that scan's result, unless ``fresh``: then every mapping is looked at
        again (the files themselves stay cached).
        """
        started = procfs.start_time(pid)
        text = procfs.maps_text(pid)
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        last = self._last.get(pid)
        if not fresh and last is not None and last[0] == started and last[1] == digest:
            return last[2]
        result = ProcessScan(pid, started, [], [])
        used: Set[tuple] = set()
        for key, mapping in _candidate_files(procfs.parse_maps(text)).items():
            found = self._inspect(pid, key, mapping, used)
            if isinstance(found, ProviderInstance):
                result.providers.append(found)
            elif isinstance(found, UsdtLibrary):
                result.usdt.append(found)
        self._set_keys(pid, used)
        if not procfs.alive(pid, started):
            self.forget(pid)
            raise procfs.ProcessGone(pid)
        self._last[pid] = (started, digest, result)
        return result

    def _open(self, pid: int, mapping: procfs.Mapping):
        """Open the mapped file; returns (file, path the kernel can resolve for uprobes)."""
        candidates = [procfs.map_file_path(pid, mapping)]
        if not mapping.deleted and mapping.path.startswith("/"):
            candidates.append(procfs.root_path(pid, mapping.path))
        last_exc: Optional[OSError] = None
        for path in candidates:
            try:
                return open(path, "rb"), path
            except OSError as exc:
                last_exc = exc
        assert last_exc is not None
        raise last_exc

    def _inspect(self, pid: int, key: Tuple[str, int], mapping: procfs.Mapping, used: Set[tuple]):
        looks_like_provider = is_provider_mapping(mapping.clean_path)
        where = "pid %d %s" % (pid, mapping.path)
        # Files keep their inode while they exist, so (dev, inode, path) names
        # their content; a memfd's inode number can be reused once it is freed,
        # so its cache key also needs size and mtime from the open file.
        memfd = mapping.path.startswith("/memfd:")
        cache_key: tuple = (key, mapping.path)
        cached = None if memfd else self._files.get(cache_key)
        path = None
        if cached is None or isinstance(cached, ProviderImage):
            try:
                f, path = self._open(pid, mapping)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if looks_like_provider:
                    self.warn_once("open:%s:%s" % (pid, mapping.path),
                                   "%s: cannot open the provider object (%s); run as root" % (where, exc))
                return None
            with f:
                if memfd:
                    try:
                        st = os.fstat(f.fileno())
                    except OSError:
                        return None
                    cache_key = (key, mapping.path, st.st_size, st.st_mtime_ns)
                    cached = self._files.get(cache_key)
                if cached is None:
                    cached = self._read(f, where, looks_like_provider)
                    self._files[cache_key] = cached
        used.add(cache_key)
        if isinstance(cached, ProviderImage):
            assert path is not None
            return ProviderInstance(pid, cached, path, key, mapping.clean_path)
        if isinstance(cached, _NotAProvider) and cached.notes and self.include_usdt:
            return UsdtLibrary(mapping.clean_path, cached.notes)
        return None

    def _read(self, f, where: str, looks_like_provider: bool):
        try:
            elf = read_probes(f)
        except (ElfError, OSError) as exc:
            if looks_like_provider:
                self._warn("%s: not a usable provider object (%s); skipped" % (where, exc))
            return False
        if elf.schema is None:
            if looks_like_provider:
                self._warn("%s: provider object has no spanprobe schema note; skipped" % where)
            return _NotAProvider(elf.notes)
        try:
            return build_image(elf, where)
        except SchemaError as exc:
            self._warn("%s: provider schema rejected (%s); this provider is skipped, "
                       "others are still traced" % (where, exc))
            return False
