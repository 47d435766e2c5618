"""Compiled BPF modules: the core module, and one module per distinct layout, cached.

bcc compiles the rendered C (kernel.render) with clang and loads every
handler. A module is keyed by its layout, so every provider and process with
the same argument shapes shares one: forty workers of one application, or the
same application restarted, attach without compiling.

``module_for`` may be called from a worker thread: bcc's compile runs in C
without the GIL, so the tracer keeps draining the ring buffer meanwhile.
bcc itself is imported only here and only when a module is built, so
`spanprobe list` or `--help` never pays for it.
"""

from __future__ import annotations

import logging
import threading
from typing import Dict, List, Optional, Tuple

from .layout import CaptureConfig, ModuleLayout
from .render import render_core, render_module

log = logging.getLogger("spanprobe.tracer")


class ModuleError(RuntimeError):
    """A BPF module could not be built or loaded."""


class Module:
    """A compiled, loaded module: its handlers' program fds and open-span maps."""

    def __init__(self, program_id: int, layout: ModuleLayout, bpf):
        self.id = program_id
        self.layout = layout
        self.bpf = bpf
        from bcc import BPF  # noqa: lazy: bcc exists only in Debian's python
        self.prog_fds: Dict[str, int] = {fn: bpf.load_func(fn.encode(), BPF.KPROBE).fd for fn in layout.functions}

    def reap(self, pid: Optional[int], older_than_ns: Optional[int] = None) -> int:
        """Delete open-span entries of ``pid`` (all pids if None) started before ``older_than_ns``.

        Returns how many were removed: starts whose end will never come (the
        process exited, or the span has been open longer than anyone waits).
        """
        removed = 0
        for s in self.layout.spans:
            table = self.bpf.get_table("sp_starts_%d" % s.index)
            doomed = [k for k, v in table.items()
                      if (pid is None or k.tgid == pid) and (older_than_ns is None or v.start_ns < older_than_ns)]
            for k in doomed:
                try:
                    del table[k]
                    removed += 1
                except KeyError:
                    pass  # its end arrived meanwhile
        return removed

    def open_starts(self) -> Dict[Tuple[int, int], int]:
        """(pid, thread id) -> the earliest start (boot ns) of a span open on that thread."""
        out: Dict[Tuple[int, int], int] = {}
        for s in self.layout.spans:
            for k, v in self.bpf.get_table("sp_starts_%d" % s.index).items():
                key = (k.tgid, v.tid)
                if key not in out or v.start_ns < out[key]:
                    out[key] = v.start_ns
        return out

    def open_spans(self) -> int:
        return sum(len(self.bpf.get_table("sp_starts_%d" % s.index).items()) for s in self.layout.spans)

    def close(self) -> None:
        self.bpf.cleanup()


class ModuleCache:
    """The core module (ring buffer, counters, dlopen() watcher) and compiled modules by layout key."""

    def __init__(self, config: CaptureConfig):
        config.check()
        self.config = config
        self._lock = threading.Lock()
        self._by_key: Dict[str, Module] = {}
        self._next_id = 1
        self.core = self._compile_core()

    def _compile_core(self):
        from bcc import BPF
        try:
            return BPF(text=render_core(self.config).encode())
        except Exception as exc:
            raise ModuleError("cannot compile the core BPF module (%s); run `spanprobe doctor`" % exc) from exc

    def cached(self, layout: ModuleLayout) -> Optional[Module]:
        with self._lock:
            return self._by_key.get(layout.key)

    def module_for(self, layout: ModuleLayout) -> Module:
        with self._lock:
            module = self._by_key.get(layout.key)
            if module is not None:
                return module
            program_id = self._next_id
            self._next_id += 1
        from bcc import BPF
        src = render_module(layout, program_id)
        try:
            bpf = BPF(text=src.encode())
            module = Module(program_id, layout, bpf)
        except Exception as exc:
            raise ModuleError("cannot build a BPF module (%d span shapes, %d probe shapes): %s"
                              % (len(layout.spans), len(layout.points), exc)) from exc
        with self._lock:
            existing = self._by_key.get(layout.key)
            if existing is not None:  # another thread won the race
                module.close()
                return existing
            self._by_key[layout.key] = module
        log.debug("compiled BPF module %d (%d span shapes, %d probe shapes)",
                  program_id, len(layout.spans), len(layout.points))
        return module

    @property
    def modules(self) -> List[Module]:
        with self._lock:
            return list(self._by_key.values())

    def close(self) -> None:
        for module in self.modules:
            try:
                module.close()
            except Exception:  # pragma: no cover - best effort at exit
                pass
        try:
            self.core.cleanup()
        except Exception:  # pragma: no cover
            pass
