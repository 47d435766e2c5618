"""Spans, events and probes on code you do not own, and a command to run a program with them.

    python -m spanprobe.instrument --config probes.toml -m http.server 8000

A config (config.py: TOML, docs/sdk-spans.md) names functions as
``module:Qual.name`` and says what each probe carries: accessor expressions
over the call's arguments (accessors.py), evaluated only while a tracer is
attached. Hooks (hooks.py) patch those functions with wrapt; the command
(command.py) runs a program with a config's hooks applied. Nothing here may
break the program: a target that cannot be found is reported with a warning
and left alone, an accessor that fails at call time is a conversion failure.
"""

from .accessors import Accessor
from .command import main
from .config import from_config, load_config
from .hooks import Instrumentation

__all__ = ["Accessor", "Instrumentation", "from_config", "load_config", "main"]
