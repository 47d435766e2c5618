"""Which processes a session traces: a fixed set of pids, every process, or a launched command's tree."""

from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional

from ..discover import procfs
from .launcher import Launched


class Targets:
    """``--pid`` (a fixed set), ``--all`` (every process but the tracer), or ``-- COMMAND`` (the
    launched process and its descendants, as they are now)."""

    def __init__(self, pids: Iterable[int] = (), everything: bool = False, launched: Optional[Launched] = None):
        self.pids = list(pids)
        self.everything = everything
        self.launched = launched
        self._self = os.getpid()

    def current(self) -> List[int]:
        if self.everything:
            return [p for p in procfs.pids() if p != self._self]
        if self.launched is not None:
            return descendants(self.launched.pid)
        return list(self.pids)


def descendants(root: int) -> List[int]:
    """``root`` and every process below it, as they are now (``root`` first)."""
    children: Dict[int, List[int]] = {}
    for pid in procfs.pids():
        try:
            children.setdefault(procfs.parent_pid(pid), []).append(pid)
        except (procfs.ProcessGone, ValueError, IndexError, OSError):
            continue
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out
