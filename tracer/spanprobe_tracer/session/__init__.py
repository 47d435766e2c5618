"""Session: the loop that drives discover -> kernel -> decode -> assemble -> export over a set of processes.

    session      Session: scan, attach and detach, compile in the background, dlopen() stops, housekeeping
    drain        Drainer: ring buffer -> decode -> assemble -> pipeline; returns the dlopen() stops it found
    attachments  attach_provider(): every probe site of a plan in one process (doctor uses it too)
    targets      Targets: --pid, --all, or a launched command and its descendants (descendants())
    launcher     Launched: `-- COMMAND` started behind a gate; watch_dlopen(); resume()
    stats        Stats: every span exported or counted lost, by reason
    span_metrics SpanMetrics: the kernel's span metrics named and handed to the metrics exporter
    adaptive     AdaptiveRatio: the adaptive sampler's control law
"""

from .attachments import Attachment, attach_provider
from .launcher import LaunchError, Launched, watch_dlopen
from .session import Session
from .stats import Stats
from .targets import Targets, descendants

__all__ = ["Attachment", "attach_provider", "LaunchError", "Launched", "watch_dlopen", "Session", "Stats", "Targets",
           "descendants"]
