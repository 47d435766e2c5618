"""One OpenTelemetry resource per traced process, built from what /proc says about it.

The application did not make these spans in-process, so the resource must say
who it was on the application's behalf. ``service.name`` comes, as an
in-process SDK would take it, from the target's own ``OTEL_SERVICE_NAME`` or
``OTEL_RESOURCE_ATTRIBUTES`` (as its provider's schema carries them, from its
environment when it loaded the provider; else /proc/PID/environ, the
environment it was started with); otherwise it is derived from the program: the
script or ``-m`` module of a Python process (for a program run through
spanprobe-instrument, the program it runs), else the executable's name.
Attribute names follow the current semantic conventions (process.*, host.*).
"""

from __future__ import annotations

import os
import pwd
import re
import socket
from typing import Dict, List, Optional, Tuple
from urllib.parse import unquote

from opentelemetry.sdk.resources import Resource
from spanprobe.instrument.command import LAUNCHERS, parse_command

from .. import __version__
from ..discover import procfs

_PYTHON_EXE = re.compile(r"(python|pypy)(\d+(?:\.\d+)?)?[a-z]*\Z")
_PY_VERSION_IN_PATH = re.compile(r"(?:libpython|/python)(\d+\.\d+)")
# CPython options that take a value in the next argument (or glued: -Xdev).
_PY_OPTS_WITH_VALUE = set("WXcm")


def parse_resource_attributes(text: str) -> Dict[str, str]:
    """OTEL_RESOURCE_ATTRIBUTES: comma-separated key=value, values percent-encoded."""
    attrs = {}
    for item in text.split(","):
        if "=" not in item:
            continue
        key, _, value = item.partition("=")
        key = key.strip()
        if key:
            attrs[key] = unquote(value.strip())
    return attrs


def python_entry(argv: List[str]) -> Optional[str]:
    """The script or module a Python command line runs, as a service name candidate.

    Behind spanprobe's launcher (``spanprobe-instrument``, ``-m spanprobe.instrument``),
    the program the launcher runs.
    """
    name, rest = _entry(argv)
    if name in LAUNCHERS:
        try:
            _, program = parse_command(argv[rest:])
        except ValueError:
            return name
        if program:
            return _entry(["python", *program])[0] or name
    return name


def _entry(argv: List[str]) -> Tuple[Optional[str], int]:
    """(the script or module, the index of its first argument) of a Python command line."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            i += 1
            continue
        # A cluster of single-letter flags, possibly ending in one that takes a value.
        for pos, letter in enumerate(arg[1:], start=1):
            if letter in _PY_OPTS_WITH_VALUE:
                value = arg[pos + 1:] or (argv[i + 1] if i + 1 < len(argv) else "")
                if letter == "m":
                    return value or None, i + (1 if arg[pos + 1:] else 2)
                if letter == "c":
                    return None, len(argv)
                if not arg[pos + 1:]:
                    i += 1
                break
        i += 1
    if i < len(argv) and argv[i] != "-":
        script = argv[i]
        name = os.path.basename(script.rstrip("/"))
        if name in ("__main__.py", ""):
            name = os.path.basename(os.path.dirname(script.rstrip("/"))) or name
        if name.endswith(".py"):
            name = name[:-3]
        return name or None, i + 1
    return None, len(argv)


def derive_service_name(exe_name: str, argv: List[str]) -> str:
    if _PYTHON_EXE.match(exe_name):
        entry = python_entry(argv)
        if entry:
            return entry
    return exe_name or "unknown_service"


def _python_runtime(pid: int, exe_name: str, schema_runtime: Optional[dict]) -> Dict[str, str]:
    if schema_runtime and isinstance(schema_runtime, dict):
        out = {}
        for key in ("name", "version", "description"):
            if isinstance(schema_runtime.get(key), str):
                out["process.runtime." + key] = schema_runtime[key]
        if out:
            return out
    m = _PYTHON_EXE.match(exe_name)
    if not m:
        return {}
    out = {"process.runtime.name": "pypy" if m.group(1) == "pypy" else "cpython"}
    version = m.group(2) if m.group(2) and "." in m.group(2) else None
    if version is None:
        try:
            for mapping in procfs.maps(pid):
                found = _PY_VERSION_IN_PATH.search(mapping.path)
                if found:
                    version = found.group(1)
                    break
        except (procfs.ProcessGone, OSError):
            pass
    if version:
        out["process.runtime.version"] = version
    return out


def process_resource(pid: int, schema_runtime: Optional[dict] = None,
                     schema_environment: Optional[dict] = None) -> Resource:
    """The resource for spans of ``pid``. Raises procfs.ProcessGone.

    ``schema_environment``: the OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES a
    provider's schema carries (the application's when it loaded the provider,
    so also values it set in code), which win over /proc/PID/environ.
    """
    env = dict(procfs.environ(pid))
    env.update(schema_environment or {})
    argv = procfs.cmdline(pid)
    exe_path = procfs.exe(pid) or ""
    if exe_path.endswith(" (deleted)"):
        exe_path = exe_path[: -len(" (deleted)")]
    exe_name = os.path.basename(exe_path) or (os.path.basename(argv[0]) if argv else procfs.comm(pid))
    attrs: Dict[str, object] = {}
    attrs.update(parse_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", "")))
    service = env.get("OTEL_SERVICE_NAME", "").strip() or attrs.get("service.name") or \
        derive_service_name(exe_name, argv)
    attrs["service.name"] = service
    attrs.update({
        "process.pid": pid,
        "process.executable.name": exe_name,
        "process.command_line": " ".join(argv),
        "process.command_args": argv,
        "host.name": socket.gethostname(),
        "telemetry.sdk.name": "spanprobe",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": __version__,
    })
    if exe_path:
        attrs["process.executable.path"] = exe_path
    try:
        attrs["process.parent_pid"] = procfs.parent_pid(pid)
    except (procfs.ProcessGone, ValueError, IndexError):
        pass
    try:
        attrs["process.owner"] = pwd.getpwuid(procfs.uid(pid)).pw_name
    except (KeyError, procfs.ProcessGone):
        pass
    attrs.update(_python_runtime(pid, exe_name, schema_runtime))
    return Resource(attrs)
