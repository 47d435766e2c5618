"""What became of one export, and the retry loop the OTLP specification asks for.

A transient failure (a retryable gRPC code or HTTP status, a connection that
failed or dropped) is tried again after an exponential backoff with jitter, or
after the delay the server asked for (gRPC RetryInfo, HTTP Retry-After),
never beyond the export's timeout: when the next try could not start before
it, the export fails at once instead of waiting in vain. Anything else is
reported at once. There is no cap on the number of tries, only the timeout
(with no timeout, tries go on until the client is shut down). Shutting the
client down ends a backoff wait at once.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Optional, Union


@dataclass(frozen=True)
class ExportResult:
    """One export: delivered (``ok``; the server may still have rejected some items: partial
    success), or failed, with the status and message of the last try."""

    ok: bool
    items: int
    rejected: int = 0            # partial success: items the server refused
    message: str = ""            # partial success: the server's message; failure: why
    status: str = ""             # "OK", a gRPC code name, "HTTP 503", "connection", "timeout", "shutdown"
    attempts: int = 1

    @property
    def delivered(self) -> int:
        return self.items - self.rejected if self.ok else 0

    def __str__(self) -> str:
        if self.ok and not (self.rejected or self.message):
            return "%d delivered" % self.items
        if self.ok:
            return "%d of %d rejected by the server: %s" % (self.rejected, self.items, self.message or "(no message)")
        return "failed after %d attempt%s: %s %s" % (self.attempts, "" if self.attempts == 1 else "s",
                                                     self.status, self.message)


@dataclass(frozen=True)
class Transient:
    """A try that may be repeated; ``delay``: the server's own wish, None to back off."""

    status: str
    message: str
    delay: Optional[float] = None


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with +-``jitter`` random spread: initial, initial*multiplier, ... up to maximum."""

    initial: float = 1.0
    multiplier: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.2

    def delay(self, retry: int) -> float:
        base = min(self.initial * self.multiplier ** retry, self.maximum)
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)


Attempt = Callable[[Optional[float]], Union[ExportResult, Transient]]


def deliver(attempt: Attempt, items: int, timeout: Optional[float], backoff: Backoff,
            stop: threading.Event) -> ExportResult:
    """Call ``attempt(seconds left or None)`` until it returns an ExportResult, or time or ``stop`` runs out."""
    deadline = None if timeout is None else time.monotonic() + timeout
    tries = 0
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        outcome = attempt(remaining)
        tries += 1
        if isinstance(outcome, ExportResult):
            return replace(outcome, attempts=tries)

        def failed(why: str) -> ExportResult:
            return ExportResult(False, items, status=outcome.status, message="%s (%s)" % (outcome.message, why),
                                attempts=tries)

        delay = max(outcome.delay, 0.0) if outcome.delay is not None else backoff.delay(tries - 1)
        if stop.is_set():
            return failed("the client was shut down")
        if deadline is not None and time.monotonic() + delay >= deadline:
            return failed("no retry: the next, in %.3g s, would end after the %g s timeout" % (delay, timeout))
        if stop.wait(delay):
            return failed("the client was shut down during the backoff")
