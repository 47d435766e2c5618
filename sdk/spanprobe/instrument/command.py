"""``spanprobe-instrument`` (``python -m spanprobe.instrument``): run a program with a config's probes.

    python -m spanprobe.instrument --config probes.toml -m http.server 8000
    python -m spanprobe.instrument --config probes.toml app.py --its-args

The program runs in this interpreter, as ``python -m MODULE`` or ``python
SCRIPT`` would run it, with the config's hooks applied and its provider
loaded (docs/sdk-spans.md). A config that cannot be used stops the command
before the program starts (status 2); a target found wrong once the program
runs is a warning (hooks.py), never a stop.
"""

import ast
import os
import runpy
import sys
import types

from ..errors import DeclarationError
from .config import load_config
from .hooks import main_hook_calls

USAGE = "usage: python -m spanprobe.instrument --config FILE (-m MODULE | SCRIPT) [ARGS...]"
#: What a tracer sees as the program of a launcher run (the console script, the ``-m`` module):
#: it names the service after the program parse_command() finds behind it instead.
LAUNCHERS = ("spanprobe-instrument", "spanprobe.instrument")
#: Exit status for a bad command line or a config that cannot be used (as `spanprobe`'s).
EXIT_USAGE = 2


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
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if config is None:
        print(USAGE + "\n\n" + __doc__.split("\n\n")[1])
        return 0
    try:
        inst = load_config(config)
    except (OSError, DeclarationError) as exc:
        print(f"spanprobe-instrument: error: {exc}; the program was not started", file=sys.stderr)
        return EXIT_USAGE
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
        names = inst.main_function_names()
        inst.apply(main_module="__main__", main_functions=bool(names) and os.path.isfile(script))
        if names and os.path.isfile(script):
            run_script(script, names)
        else:
            runpy.run_path(script, run_name="__main__")
    return 0


def run_script(path, names):
    """Run a script file as ``__main__``, as runpy.run_path would, with hooks after the ``def`` of ``names``.

    The code is compiled from the script's own source and file name, so
    tracebacks and line numbers are the script's.
    """
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), path)
    code = compile(main_hook_calls(tree, names), path, "exec")
    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=path, __cached__=None, __loader__=None, __package__="", __spec__=None)
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)
    finally:
        sys.modules["__main__"] = saved
