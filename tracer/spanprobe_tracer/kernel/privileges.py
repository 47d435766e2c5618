"""Does this process have the rights tracing needs? Checked up front, so the answer is clear.

Without the check, a missing privilege shows up late and obscurely (a bcc
compile that "fails", an EPERM from perf_event_open, an empty memory map).
"""

from __future__ import annotations

import os
from typing import List, Optional

# Linux capability numbers (linux/capability.h).
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

#: What the tracer needs and why; CAP_SYS_ADMIN covers BPF/PERFMON on old kernels.
REQUIRED = {
    CAP_BPF: "CAP_BPF (load BPF programs and maps)",
    CAP_PERFMON: "CAP_PERFMON (uprobes via perf_event_open)",
    CAP_SYS_ADMIN: "CAP_SYS_ADMIN (open provider objects through /proc/PID/map_files)",
    CAP_SYS_PTRACE: "CAP_SYS_PTRACE (read other users' /proc/PID/maps and environ)",
}


def effective_caps(status_path: str = "/proc/self/status") -> int:
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def missing() -> List[str]:
    """Descriptions of the capabilities this process lacks (empty: it may trace)."""
    if os.geteuid() == 0 and effective_caps() & (1 << CAP_SYS_ADMIN):
        return []
    caps = effective_caps()
    out = []
    for cap, text in REQUIRED.items():
        if cap in (CAP_BPF, CAP_PERFMON) and caps & (1 << CAP_SYS_ADMIN):
            continue
        if not caps & (1 << cap):
            out.append(text)
    return out


def problem() -> Optional[str]:
    """A message saying what is missing and how to fix it, or None."""
    lacking = missing()
    if not lacking:
        return None
    return ("tracing needs root (or these capabilities: %s); run it with sudo, or as a container with "
            "--privileged / --cap-add BPF,PERFMON,SYS_ADMIN,SYS_PTRACE and --pid=host"
            % "; ".join(lacking))
