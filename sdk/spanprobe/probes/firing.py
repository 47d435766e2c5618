"""Generate each probe's ``fire`` and ``emit`` functions.

``fire`` is what applications call: the probe's exact parameters, and a body
that is one truth test of the probe's Semaphore. ``emit`` runs only while a
tracer is attached; it checks and converts the arguments inline for the
plain cases (a str, an int in range, a float) and hands anything else (lazy
callables, int subclasses, bad values) to the probe's careful path
(probe.py), which converts them or, for a value that does not fit, skips
the hit and counts it: tracing never makes the application raise.

The functions are generated from source, as ``collections.namedtuple`` does,
so that a call has no ``*args`` tuple, no loop and no per-argument function
call, and a wrong argument count fails like any Python call, for free. Both
read the semaphore and the probe site from closure cells, which load() and
unload() rewrite: every reference to ``fire``, including ones cached before
the provider was loaded, follows.
"""

import ctypes
import keyword

from ..abi.types import ArgType
from .convert import f64_bits


def param_names(args):
    """Python parameter names for the generated functions: the argument names where possible."""
    names, seen = [], set()
    for i, arg in enumerate(args):
        base = arg.name.replace(".", "_")
        if not base.isidentifier() or keyword.iskeyword(base) or base.startswith("_sp_"):
            base = f"arg{i}"
        name = base
        while name in seen:
            name = f"{base}_{i}"
        seen.add(name)
        names.append(name)
    return names


#: The names that fast_path()'s expressions refer to; generated code needs them in its namespace.
#: 64-bit values go to the site as ``from_param`` objects, which ctypes passes as they are (a
#: c_uint64 instance is converted into one at every call: ~25 ns more an argument).
FAST_PATH_NAMES = {"_sp_u64": ctypes.c_uint64.from_param, "_sp_i64": ctypes.c_int64.from_param,
                   "_sp_f64_bits": f64_bits}


def fast_path(i, param, arg_type):
    """(condition, value expression, setup lines) for one argument's inline conversion.

    None for types that always take the careful path (bytes). Shared by the
    probes' emit() and the span and event emitters (spanprobe.spans.definition).
    """
    if arg_type is ArgType.STR:
        # AttributeError from a non-str lands in the careful path (see below).
        return f"0 not in _sp_b{i}", f"_sp_b{i}", [f"_sp_b{i} = {param}.encode()"]
    if arg_type is ArgType.BOOL:
        return f"({param} is True or {param} is False)", param, []
    if arg_type is ArgType.F64:
        return f"type({param}) is float", f"_sp_u64(_sp_f64_bits({param}))", []
    if arg_type.is_integer:
        lo, hi = arg_type.range
        value = param if arg_type.size < 8 else f"_sp_{'i' if arg_type.signed else 'u'}64({param})"
        return f"type({param}) is int and {lo} <= {param} <= {hi}", value, []
    return None  # bytes: always the careful path


def generate(qualname, args):
    """Return factory(semaphore, site, careful) -> (fire, emit); careful(site, *values) never raises."""
    params = param_names(args)
    plist = ", ".join(params)
    fast = [fast_path(i, p, a.type) for i, (p, a) in enumerate(zip(params, args))]
    careful_call = f"_sp_careful(_sp_site, {plist})"
    lines = [
        "def _sp_factory(_sp_gate, _sp_site, _sp_careful):",
        f"    def fire({plist}):",
        "        if _sp_gate:",
        f"            emit({plist})",
        f"    def emit({plist}):",
    ]
    if any(f is None for f in fast):
        lines.append(f"        {careful_call}")
    else:
        setup = [line for f in fast for line in f[2]]
        condition = " and ".join(f[0] for f in fast) or "True"
        values = ", ".join(f[1] for f in fast)
        if setup:
            lines += ["        try:"] + [f"            {line}" for line in setup]
            lines += ["        except Exception:  # not a str (no .encode, or not str's), a lone surrogate",
                      f"            return {careful_call}"]
        lines += [f"        if {condition}:",
                  f"            _sp_site({values})",
                  "        else:",
                  f"            {careful_call}"]
    lines.append("    return fire, emit")
    return compile_factory(f"probe {qualname}", "\n".join(lines) + "\n", dict(FAST_PATH_NAMES))


def compile_factory(name, source, namespace):
    """Exec generated source defining ``_sp_factory`` and return that function."""
    exec(compile(source, f"<spanprobe {name}>", "exec"), namespace)
    return namespace["_sp_factory"]


def indent(source, spaces):
    """Generated source lines, indented by ``spaces``."""
    return "".join(" " * spaces + line + "\n" for line in source.splitlines())


def comma_each(names):
    """``"a, b, "``: each name followed by ", ", for a tuple display or the head of an argument list."""
    return "".join(f"{n}, " for n in names)
