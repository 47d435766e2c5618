"""`spanprobe list`: which processes have providers, and what their probes carry.

Reads schemas only: no BPF is loaded, so listing is cheap and safe. Plain
USDT libraries (SDT notes without a spanprobe schema, such as libc's or a
Python built with --with-dtrace) are listed too, marked as not traced.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Tuple

from spanprobe.abi.protocol import (DEFAULT_KIND, FIXED_ARGS, ROLE_EVENT, ROLE_PLAIN, ROLE_SPAN_END,
                                    ROLE_SPAN_START, VIEW_WIDTH, views)

from ..discover import ProcessScan, Scanner, procfs
from ..errors import NoProviders, NoSuchProcess, NotPermitted
from ..text import safe_text


def configure(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--pid", "-p", type=int, action="append", default=[], metavar="PID",
                       help="list this process (repeatable)")
    which.add_argument("--all", "-a", action="store_true",
                       help="every process with a provider (the default)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _args_text(args) -> str:
    return ", ".join("%s: %s" % (safe_text(n), t) for n, t in args)


def _attributes(probe, role: str) -> List[Tuple[str, str]]:
    """(name, type) of a described probe's attributes: its arguments after the protocol's fixed ones."""
    if not probe:
        return []
    return [(a["name"], a["type"]) for a in probe["args"][len(FIXED_ARGS[role]):]]


def describe(scan: ProcessScan) -> dict:
    providers = []
    for inst in scan.providers:
        image = inst.image
        schema = image.schema
        by_name = {p["name"]: p for p in schema["probes"]}
        providers.append({
            "provider": image.provider,
            "path": inst.display_path,
            # the object as other USDT tools open it (bpftrace, trace-bpfcc: docs/sdk-spans.md)
            "object": inst.attach_path,
            "spans": [dict(s) for s in schema.get("spans", [])],
            "events": [dict(e) for e in schema.get("events", [])],
            "probes": [{"name": p["name"], "role": p["role"],
                        "args": [{"name": a["name"], "type": a["type"]} for a in p["args"]],
                        "traceable": p["name"] in image.probes,
                        "views": [view for view, _ in views(p["name"], len(p["args"]))],
                        **({"problem": image.broken[p["name"]]} if p["name"] in image.broken else {})}
                       for p in by_name.values()],
        })
    usdt = [{"path": lib.path,
             "probes": [{"provider": n.provider, "name": n.name, "args": n.args} for n in lib.notes]}
            for lib in scan.usdt]
    try:
        cmd = " ".join(procfs.cmdline(scan.pid))
    except procfs.ProcessGone:
        cmd = ""
    return {"pid": scan.pid, "command": cmd, "providers": providers, "usdt": usdt}


def render(info: dict) -> List[str]:
    lines = ["pid %d  %s" % (info["pid"], safe_text(info["command"], 120))]
    if not info["providers"]:
        lines.append("  no spanprobe providers")
    for prov in info["providers"]:
        lines.append("  provider %s  (%s)" % (prov["provider"], safe_text(prov["path"])))
        lines.append("    object for USDT tools: %s" % safe_text(prov["object"]))
        probes = {p["name"]: p for p in prov["probes"]}
        shown = set()
        for span in prov["spans"]:
            start, end = probes.get(span["start"]), probes.get(span["end"])
            code = span.get("code") or {}
            where = ""
            if code:
                where = "  at %s %s:%s" % (safe_text(str(code.get("function", "?"))),
                                           safe_text(str(code.get("filepath", "?"))), code.get("lineno", "?"))
            one = "  (one hit: %s)" % span["span"] if span.get("span") else ""
            lines.append("    span %s [%s]  %s -> %s%s%s" % (safe_text(str(span.get("name"))),
                                                             span.get("kind", DEFAULT_KIND), span["start"],
                                                             span["end"], one, where))
            start_attrs, end_attrs = _attributes(start, ROLE_SPAN_START), _attributes(end, ROLE_SPAN_END)
            if start_attrs:
                lines.append("      attributes: " + _args_text(start_attrs))
            if end_attrs:
                lines.append("      end attributes: " + _args_text(end_attrs))
            shown.update((span["start"], span["end"], span.get("span")))
        for event in prov["events"]:
            attrs = _attributes(probes.get(event["probe"]), ROLE_EVENT)
            lines.append("    event %s  (probe %s)%s" % (
                safe_text(str(event.get("name"))), event["probe"],
                "  attributes: " + _args_text(attrs) if attrs else ""))
            shown.add(event["probe"])
        for probe in prov["probes"]:
            if probe["name"] in shown:
                continue
            role = "probe" if probe["role"] == ROLE_PLAIN else "%s probe" % probe["role"]
            lines.append("    %s %s(%s)" % (role, probe["name"],
                                            _args_text((a["name"], a["type"]) for a in probe["args"])))
        for probe in prov["probes"]:
            for i, view in enumerate(probe["views"]):
                first = VIEW_WIDTH * (i + 1)
                last = min(first + VIEW_WIDTH, len(probe["args"])) - 1
                which = "argument %d" % first if first == last else "arguments %d-%d" % (first, last)
                lines.append("    view %s: %s's %s, for tools that read six" % (view, probe["name"], which))
        for probe in prov["probes"]:
            if not probe["traceable"]:
                lines.append("    ! %s cannot be traced: %s" % (probe["name"], safe_text(probe.get("problem", "?"))))
    for lib in info["usdt"]:
        lines.append("  plain USDT (no schema; listed, not traced): %s" % safe_text(lib["path"]))
        for p in lib["probes"]:
            lines.append("    %s:%s  %s" % (safe_text(p["provider"]), safe_text(p["name"]), safe_text(p["args"])))
    return lines


def run(args: argparse.Namespace) -> int:
    scanner = Scanner(include_usdt=True, warn=lambda msg: print("spanprobe: warning: " + msg, file=sys.stderr))
    results = []
    if args.pid:
        for pid in args.pid:
            try:
                results.append(scanner.scan(pid))
            except procfs.ProcessGone:
                raise NoSuchProcess("no process with pid %d" % pid) from None
            except PermissionError:
                raise NotPermitted("not allowed to read the memory map of pid %d; run as root" % pid) from None
        if not any(r.providers for r in results):
            _emit(args, results)
            raise NoProviders("no spanprobe providers in pid %s (a provider appears once the application "
                              "has called Provider.load())" % ", ".join(str(p) for p in args.pid))
    else:
        me = os.getpid()
        for pid in procfs.pids():
            if pid == me:
                continue
            try:
                scan = scanner.scan(pid)
            except (procfs.ProcessGone, OSError):
                continue
            if scan.providers:
                results.append(scan)
        if not results and not args.json:
            print("no process has a spanprobe provider loaded%s" % (
                "" if os.geteuid() == 0 else " (that we can see: run as root to see every process)"))
            return 0
    _emit(args, results)
    return 0


def _emit(args, results: List[ProcessScan]) -> None:
    infos = [describe(r) for r in results]
    if args.json:
        print(json.dumps(infos, indent=2))
    else:
        print("\n".join(line for info in infos for line in render(info)))
