"""Spans, events and probes on code you do not own, and a command to run a program with them.

    python -m spanprobe.instrument --config probes.toml -m http.server 8000
    python -m spanprobe.instrument --config probes.toml app.py --its-args

The config (TOML, docs/sdk-spans.md) names functions as ``module:Qual.name``
and says what each probe carries. Attribute values are small accessor
expressions over the call's arguments, evaluated only while a tracer is
attached, for example ``self.client_address[0]`` or
``os.path.getsize(self.translate_path(self.path))``. They are not Python:
names, attributes and methods not starting with ``_`` (but ``__name__``),
constant subscripts, constants, and calls to a few listed functions (``len``, ``str``,
``os.path.getsize``, ...); anything else is refused when the config loads.

wrapt does the patching (``wrap_function_wrapper``), when the module is
first imported (``when_imported``) or at once if it already is. Its ~0.5 µs
per call is acceptable for code you could not decorate. A program run with
``-m X`` executes X's code as ``__main__``, so its classes are not those of
an imported X: classes created there are instrumented as they are defined,
through a ``__build_class__`` hook (module-level functions of that module
cannot be reached; a warning says so).

Nothing here may break the program: a target that cannot be found or
bound is reported with a warning and left alone, and at call time an
accessor that fails is recorded as a conversion failure (a plain probe,
which has no flags, skips that hit).
"""

from .accessors import Accessor
from .command import main
from .config import from_config, load_config
from .hooks import Instrumentation

__all__ = ["Accessor", "Instrumentation", "from_config", "load_config", "main"]
