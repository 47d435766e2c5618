"""``spanprobe-instrument`` (``python -m spanprobe.instrument``): run a program with a config's probes.

    python -m spanprobe.instrument --config probes.toml -m http.server 8000
    python -m spanprobe.instrument --config probes.toml app.py --its-args

The program runs in this interpreter, as ``python -m MODULE`` or ``python
SCRIPT`` would run it, with the config's hooks applied and its provider
loaded (docs/sdk-spans.md).
"""

import os
import runpy
import sys

from ..errors import DeclarationError
from .config import load_config

USAGE = "usage: python -m spanprobe.instrument --config FILE (-m MODULE | SCRIPT) [ARGS...]"
#: What a tracer sees as the program of a launcher run (the console script, the ``-m`` module):
#: it names the service after the program parse_command() finds behind it instead.
LAUNCHERS = ("spanprobe-instrument", "spanprobe.instrument")


def parse_command(argv):
    """(config, program) from the launcher's arguments; (None, None) for --help.

    ``program`` is the program's own command line as Python would take it:
    ``["-m", MODULE, ARGS...]`` or ``[SCRIPT, ARGS...]``. ValueError (the
    message to print) if the arguments are wrong.
    """
    argv, config = list(argv), None
    while argv and argv[0].startswith("-") and argv[0] != "-m":
        opt = argv.pop(0)
        if opt in ("-h", "--help"):
            return None, None
        if opt == "--config" and argv:
            config = argv.pop(0)
        elif opt.startswith("--config="):
            config = opt.partition("=")[2]
        else:
            raise ValueError(f"spanprobe-instrument: unknown option {opt!r}\n{USAGE}")
    if config is None or not argv or (argv[0] == "-m" and len(argv) < 2):
        raise ValueError(USAGE)
    return config, argv


def main(argv=None):
    """Run a Python program with the probes a config declares."""
    try:
        config, argv = parse_command(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        sys.exit(str(exc))
    if config is None:
        print(USAGE + "\n\n" + __doc__.split("\n\n")[1])
        return 0
    try:
        inst = load_config(config)
    except (OSError, DeclarationError) as exc:
        sys.exit(f"spanprobe-instrument: {exc}")
    inst.provider.load()
    if argv[0] == "-m":
        module = argv[1]
        sys.argv = [module] + argv[2:]
        inst.apply(main_module=module)
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        script = argv[0]
        sys.argv = argv
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
        inst.apply(main_module="__main__")
        runpy.run_path(script, run_name="__main__")
    return 0
