"""A plain-text progress bar that degrades to one line per step when nobody watches.

On a terminal the bar is redrawn in place with a carriage return (no escape
sequences, no dependency), so a person sees motion without a scrolling wall.
Elsewhere (a pipe, a CI log, a file) carriage returns would pile up into one
unreadable line, so each step is its own line instead.
"""

from __future__ import annotations

import shutil
import sys
import threading
from typing import IO, Optional


class Progress:
    """``step(text)`` marks one more of ``total`` done; ``finish()`` ends the bar's line."""

    def __init__(self, total: int, label: str, out: Optional[IO[str]] = None, width: int = 24):
        self.total = max(total, 1)
        self.label = label
        self.out = out or sys.stderr
        self.width = width
        self.done = 0
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self._shown = 0          # characters of the bar's line currently on the terminal
        self._lock = threading.Lock()

    def step(self, text: str = "") -> None:
        with self._lock:
            self.done = min(self.done + 1, self.total)
            counter = "%d/%d" % (self.done, self.total)
            if not self.tty:
                self.out.write("%s %s %s\n" % (self.label, counter, text))
            else:
                filled = self.width * self.done // self.total
                bar = "[%s%s]" % ("#" * filled, "." * (self.width - filled))
                line = "%s %s %s %s" % (self.label, bar, counter, text)
                line = line[:max(shutil.get_terminal_size().columns - 1, 20)]
                # Spaces over what is left of a longer previous line: plain text only.
                self.out.write("\r" + line + " " * max(self._shown - len(line), 0))
                self._shown = len(line)
            self.out.flush()

    def finish(self) -> None:
        with self._lock:
            if self.tty and self._shown:
                self.out.write("\n")
                self.out.flush()
            self._shown = 0
