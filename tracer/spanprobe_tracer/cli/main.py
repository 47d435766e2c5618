"""The `spanprobe` command.

Each subcommand is a module with ``configure(parser)`` and ``run(args) ->
exit status``, listed in COMMANDS and imported only when used (so `spanprobe
--help` or `spanprobe list` never pays for bcc or the OTLP exporters). Adding
a subcommand (for example `spanprobe demo`) is one module and one row here.

Errors meant for the user (errors.TracerError) print one clear line and exit
with their own status; anything else is a bug and shows its traceback.

`pip install spanprobe` in an application's virtualenv installs this command
with the SDK but not the tracer's packages (the `tracer` extra): then it says
so in one line, before importing anything that needs them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from typing import List, Optional

from .. import __version__
from ..errors import ExitStatus, TracerError
from ..text import MAX_MESSAGE, safe_text

#: (name, module, one-line help)
COMMANDS = [
    ("list", "spanprobe_tracer.cli.list", "list providers and probes in running processes"),
    ("trace", "spanprobe_tracer.cli.trace", "trace processes and export their spans"),
    ("doctor", "spanprobe_tracer.cli.doctor", "check that this machine can trace, and say how to fix it"),
    ("demo", "spanprobe_tracer.cli.demo.command",
     "trace the demo HTTP server while downloading from it, and show the traces"),
]


#: (module, distribution) the tracer imports; pyproject.toml's `tracer` extra installs them.
TRACER_PACKAGES = [("opentelemetry.sdk", "opentelemetry-sdk"), ("opentelemetry.proto", "opentelemetry-proto"),
                   ("google.protobuf", "protobuf"), ("grpc", "grpcio")]
NOT_INSTALLED = (
    "spanprobe: error: the tracer is not installed in this Python (missing: %s; only the SDK is): "
    "it needs Debian's bcc (apt-get install python3-bpfcc) and the spanprobe[tracer] extra, in a venv "
    "made with Debian's python3 -m venv --system-site-packages, run as root (docs/quickstart.md)")


def missing_tracer_packages() -> List[str]:
    """The distributions of the tracer extra that cannot be imported here."""
    missing = []
    for module, distribution in TRACER_PACKAGES:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # its parent package is missing
            found = False
        if not found:
            missing.append(distribution)
    return missing


def build_parser(commands=COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spanprobe",
        description="Trace spanprobe USDT probes with eBPF and export them as OpenTelemetry spans.",
        epilog="Exit status: 0 ok, 1 error, 2 usage, 3 no such process, 4 no providers, "
               "5 missing privileges, 6 OTLP endpoint unreachable, 7 BPF unavailable, "
               "8 the tracer is not installed (only the SDK is) "
               "(with -- COMMAND: the command's status).")
    parser.add_argument("--version", action="version", version="spanprobe %s" % __version__)
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    sub.required = True
    for name, module_name, help_text in commands:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(command_module=module_name)
        _module(module_name).configure(p)
    return parser


def _module(name: str):
    return importlib.import_module(name)


class EscapeUntrusted(logging.Filter):
    """Log messages quote untrusted text (mapped paths, schema excerpts, names): escape and cap them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = safe_text(record.getMessage(), MAX_MESSAGE), ()
        return True


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("spanprobe: %(levelname)s: %(message)s"))
    handler.addFilter(EscapeUntrusted())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("spanprobe").setLevel(level)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    missing = missing_tracer_packages()
    if missing:
        print(NOT_INSTALLED % ", ".join(missing), file=sys.stderr)
        return int(ExitStatus.NOT_INSTALLED)
    # `spanprobe trace [opts] -- cmd args`: argparse's REMAINDER needs the "--" kept.
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "verbose", 0) or 0)
    try:
        return int(_module(args.command_module).run(args) or 0)
    except TracerError as exc:
        print("spanprobe: error: %s" % exc, file=sys.stderr)
        return int(exc.status)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return int(ExitStatus.OK)
