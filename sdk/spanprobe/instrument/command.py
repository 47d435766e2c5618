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


def main(argv=None):
    """Run a Python program with the probes a config declares."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config = None
    while argv and argv[0].startswith("-") and argv[0] != "-m":
        opt = argv.pop(0)
        if opt in ("-h", "--help"):
            print(USAGE + "\n\n" + __doc__.split("\n\n")[1])
            return 0
        if opt == "--config" and argv:
            config = argv.pop(0)
        elif opt.startswith("--config="):
            config = opt.partition("=")[2]
        else:
            sys.exit(f"spanprobe-instrument: unknown option {opt!r}\n{USAGE}")
    if config is None or not argv or (argv[0] == "-m" and len(argv) < 2):
        sys.exit(USAGE)
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
