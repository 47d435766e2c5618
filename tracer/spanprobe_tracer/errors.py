"""Errors the tracer reports to a person, each with its own exit status.

Scripts and supervisors (systemd, Kubernetes) act on the status, so every
distinct cause a user can fix gets a distinct number, and the message says
what to do about it.
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1               # anything unexpected (a bug: please report it)
    USAGE = 2               # bad command line (argparse uses 2 as well)
    NO_SUCH_PROCESS = 3     # a --pid that does not exist
    NO_PROVIDERS = 4        # nothing to trace in the given processes
    PERMISSION = 5          # not root / missing capabilities / process not ours to trace
    ENDPOINT_UNREACHABLE = 6  # the OTLP collector cannot be reached at start
    BPF_UNAVAILABLE = 7     # bcc missing, BPF compile or load failed (see `spanprobe doctor`)
    NOT_INSTALLED = 8       # only the SDK is installed here: the tracer's Python packages are missing


class TracerError(Exception):
    """A failure the user can act on. ``status`` is the process exit status."""

    status = ExitStatus.ERROR

    def __init__(self, message: str, status: "ExitStatus | None" = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class NoSuchProcess(TracerError):
    status = ExitStatus.NO_SUCH_PROCESS


class NoProviders(TracerError):
    status = ExitStatus.NO_PROVIDERS


class NotPermitted(TracerError):
    status = ExitStatus.PERMISSION


class EndpointUnreachable(TracerError):
    status = ExitStatus.ENDPOINT_UNREACHABLE


class BpfUnavailable(TracerError):
    status = ExitStatus.BPF_UNAVAILABLE
