"""Spans, events and probes on code you do not own, and a command to run a program with them.

    python -m spanprobe.instrument --config probes.toml -m http.server 8000
    python -m spanprobe.instrument --config probes.toml app.py --its-args

The config (TOML, docs/sdk-spans.md) names functions as ``module:Qual.name``
and says what each probe carries. Attribute values are small accessor
expressions over the call's arguments, evaluated only while a tracer is
attached, for example ``self.client_address[0]`` or
``os.path.getsize(self.translate_path(self.path))``. They are not Python:
names, attributes and methods not starting with ``_`` (but ``__name__``),
constant subscripts,
constants, and calls to a few listed functions (``len``, ``str``,
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

import ast
import builtins
import inspect
import logging
import os
import runpy
import sys
import warnings

import wrapt

from .errors import DeclarationError
from .event import Event
from .provider import Arg, Provider
from .span import FAILED, SpanDef, parse_type

log = logging.getLogger("spanprobe.instrument")

#: The functions an accessor may call, by the dotted name it uses.
FUNCTIONS = {
    "len": len, "str": str, "int": int, "float": float, "bool": bool, "abs": abs,
    "min": min, "max": max, "repr": repr, "type": type,
    "os.fspath": os.fspath, "os.getpid": os.getpid,
    "os.path.getsize": os.path.getsize, "os.path.basename": os.path.basename,
    "os.path.dirname": os.path.dirname, "os.path.realpath": os.path.realpath,
    "os.path.abspath": os.path.abspath, "os.path.exists": os.path.exists,
    "os.path.isdir": os.path.isdir, "os.path.isfile": os.path.isfile,
}
RESULT = "result"
#: The only attributes starting with '_' that accessors may read: names, for labels.
NAME_ATTRIBUTES = ("__name__", "__qualname__")


# --- accessors ----------------------------------------------------------------------


class Accessor:
    """A compiled accessor expression: ``accessor(env)`` with env = {parameter: value, ...}."""

    def __init__(self, text):
        if not isinstance(text, str):
            raise DeclarationError(f"accessor must be a str, got {text!r}")
        self.text = text
        self.names = set()
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise DeclarationError(f"accessor {text!r}: {exc.msg}") from None
        self._fn = self._compile(tree.body)

    def __call__(self, env):
        return self._fn(env)

    def __repr__(self):
        return f"<Accessor {self.text!r}>"

    def _refuse(self, node, why):
        raise DeclarationError(f"accessor {self.text!r}: {why}")

    def _compile(self, node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
            value = node.value
            return lambda env: value
        if isinstance(node, ast.Name):
            name = node.id
            self.names.add(name)
            return lambda env: env[name]
        if isinstance(node, ast.Attribute):
            attr = self._public(node.attr)
            obj = self._compile(node.value)
            return lambda env: getattr(obj(env), attr)
        if isinstance(node, ast.Subscript):
            key = self._constant_key(node.slice)
            obj = self._compile(node.value)
            return lambda env: obj(env)[key]
        if isinstance(node, ast.Call):
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                self._refuse(node, "calls take plain positional arguments only")
            args = [self._compile(a) for a in node.args]
            dotted = _dotted(node.func)
            if dotted in FUNCTIONS:
                fn = FUNCTIONS[dotted]
                return lambda env: fn(*[a(env) for a in args])
            if isinstance(node.func, ast.Attribute):  # a method of an argument
                method = self._public(node.func.attr)
                obj = self._compile(node.func.value)
                return lambda env: getattr(obj(env), method)(*[a(env) for a in args])
            self._refuse(node, f"{dotted or 'that'} is not a function accessors may call "
                               f"({', '.join(sorted(FUNCTIONS))}), nor a method")
        self._refuse(node, f"{type(node).__name__} is not allowed: use names, .attributes, "
                           "[constant] subscripts, method calls and the listed functions")

    def _public(self, attr):
        if attr.startswith("_") and attr not in NAME_ATTRIBUTES:
            raise DeclarationError(f"accessor {self.text!r}: attribute {attr!r} starts with '_'; "
                                   "accessors reach public attributes (and __name__, __qualname__) only")
        return attr

    def _constant_key(self, node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, str)):
            return node.value
        if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
                and isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, int)):
            return -node.operand.value
        raise DeclarationError(f"accessor {self.text!r}: subscripts must be constant ints or strings")


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _value_source(spec, what):
    """An accessor text or a callable(env) -> a callable(env)."""
    if callable(spec):
        return spec
    return Accessor(spec) if isinstance(spec, str) else _bad(what, spec)


def _bad(what, spec):
    raise DeclarationError(f"{what}: the value must be an accessor expression (str) or a "
                           f"callable taking the arguments dict, got {spec!r}")


def _attr_specs(attributes, what):
    """{attribute: (type, value)} -> ([Arg], [value source])."""
    args, sources = [], []
    for name, spec in (attributes or {}).items():
        if isinstance(spec, dict):
            unknown = set(spec) - {"type", "value"}
            if unknown or "type" not in spec or "value" not in spec:
                raise DeclarationError(f"{what} attribute {name!r}: give exactly type and value, "
                                       f"got {sorted(spec)}")
            spec = (spec["type"], spec["value"])
        if not (isinstance(spec, (tuple, list)) and len(spec) == 2):
            raise DeclarationError(f"{what} attribute {name!r}: expected (type, value), got {spec!r}")
        args.append(Arg(name, parse_type(spec[0], f"{what} attribute {name!r}")))
        sources.append(_value_source(spec[1], f"{what} attribute {name!r}"))
    return args, sources


def _values(sources, env):
    out = []
    for source in sources:
        try:
            out.append(source(env))
        except Exception:
            out.append(FAILED)
    return tuple(out)


# --- hooks ----------------------------------------------------------------------------


def split_target(target):
    """("module", "Qual.name") from "module:Qual.name"."""
    module, sep, qualname = target.partition(":") if isinstance(target, str) else ("", "", "")
    if not sep or not module or not qualname:
        raise DeclarationError(f"target {target!r} must be 'module:Qualified.name'")
    return module, qualname


class Hook:
    """One target function and what fires around it; ``wrapper`` is the wrapt wrapper."""

    def __init__(self, target, what, sources, end_sources=()):
        module, qualname = split_target(target)
        self.target, self.module, self.qualname, self.what = target, module, qualname, what
        self.sources, self.end_sources = list(sources), list(end_sources)

    def names(self):
        return set().union(*(getattr(s, "names", set()) for s in self.sources + self.end_sources))

    def make_wrapper(self, original, binding):
        """The wrapt wrapper for ``original``; ``binding`` is how wrapt's instance joins the arguments."""
        sig = inspect.signature(original)
        unknown = self.names() - set(sig.parameters) - set(FUNCTIONS) - {RESULT}
        if unknown:
            raise DeclarationError(f"{self.what}: accessors use {sorted(unknown)}, which are not "
                                   f"parameters of {self.target} {sig}")
        if RESULT in self.names() and RESULT in sig.parameters:
            raise DeclarationError(f"{self.what}: {self.target} has a parameter named {RESULT!r}")

        def bind(instance, args, kwargs):
            try:
                if binding and instance is not None:
                    args = (instance,) + tuple(args)
                bound = sig.bind(*args, **kwargs)
                bound.apply_defaults()
                return bound.arguments
            except Exception:
                return {}  # every accessor then fails: recorded, never raised

        return self.wrapper(bind, inspect.iscoroutinefunction(original))


class SpanHook(Hook):
    def __init__(self, target, span, sources, end_sources):
        super().__init__(target, f"span {span.name!r}", sources, end_sources)
        self.span = span

    def wrapper(self, bind, is_async):
        span, sources, end_sources = self.span, self.sources, self.end_sources
        start, end = span.start, span.end

        def finish_ok(state, env, result):
            if end_sources:
                env = dict(env, **{RESULT: result})
            span.finish(state, None, _values(end_sources, env) if end_sources else None)

        async def traced_async(wrapped, env, args, kwargs):
            state = span.begin(_values(sources, env))
            try:
                result = await wrapped(*args, **kwargs)
            except BaseException as exc:
                span.finish(state, exc)
                raise
            finish_ok(state, env, result)
            return result

        def wrapper(wrapped, instance, args, kwargs):
            if not (start.enabled or end.enabled):
                return wrapped(*args, **kwargs)
            env = bind(instance, args, kwargs)
            if is_async:
                return traced_async(wrapped, env, args, kwargs)
            state = span.begin(_values(sources, env))
            try:
                result = wrapped(*args, **kwargs)
            except BaseException as exc:
                span.finish(state, exc)
                raise
            finish_ok(state, env, result)
            return result

        return wrapper


class EventHook(Hook):
    """An event (``event``) or a plain probe (``probe``) fired as each call begins."""

    def __init__(self, target, fire, probe, sources, what):
        super().__init__(target, what, sources)
        self.fire, self.probe = fire, probe

    def wrapper(self, bind, is_async):
        fire, probe, sources = self.fire, self.probe, self.sources

        def wrapper(wrapped, instance, args, kwargs):
            if probe.enabled:
                fire(_values(sources, bind(instance, args, kwargs)))
            return wrapped(*args, **kwargs)

        return wrapper


def _fire_plain(probe):
    """Fire a plain probe with values; one that fails conversion skips the hit (no flags to say so)."""

    def fire(values):
        try:
            probe._emit(*values)
        except Exception:
            log.debug("probe %s: a value did not convert; hit skipped", probe.qualname, exc_info=True)

    return fire


# --- instrumentation ------------------------------------------------------------------


class Instrumentation:
    """Probes on functions of other modules, declared on one provider.

    Declare everything, ``provider.load()``, then ``apply()``. Attribute
    specs are ``{"attribute.name": (type, value)}`` where value is an
    accessor expression or a callable receiving the arguments as a dict
    (``self`` included for methods; ``result`` too in end attributes).
    """

    def __init__(self, provider):
        self.provider = provider
        self.hooks = []
        self._applied = False
        self._main_aliases = set()

    def span(self, target, name=None, *, kind="internal", attributes=None, end_attributes=None,
             probe=None):
        """A span around each call of ``target`` ("module:Qual.name")."""
        name = name or split_target(target)[1]
        what = f"span {name!r}"
        args, sources = _attr_specs(attributes, what)
        end_args, end_sources = _attr_specs(end_attributes, what)
        span = SpanDef(self.provider, name, kind, args, end_args, probe=probe,
                       code={"function": target.replace(":", ".")})
        return self._add(SpanHook(target, span, sources, end_sources))

    def event(self, target, name=None, *, attributes=None, probe=None):
        """An event (tied to the current span) fired as each call of ``target`` begins."""
        name = name or split_target(target)[1]
        args, sources = _attr_specs(attributes, f"event {name!r}")
        ev = Event(self.provider, name, args, probe=probe, lazy=False)
        return self._add(EventHook(target, ev.emit, ev.probe, sources, f"event {name!r}"))

    def probe(self, target, name, *, args=None):
        """A plain probe (just the listed arguments, as the seed's file_transfer) fired at each call."""
        split_target(target)
        what = f"probe {name!r}"
        probe_args, sources = _attr_specs(args, what)
        probe = self.provider._declare(name, probe_args, "plain")
        return self._add(EventHook(target, _fire_plain(probe), probe, sources, what))

    def _add(self, hook):
        if self._applied:
            raise DeclarationError("declare every hook before apply()")
        self.hooks.append(hook)
        return hook

    def apply(self, main_module=None):
        """Patch every target now if its module is imported, else when it is.

        ``main_module``: the module a ``-m`` run executes as ``__main__``;
        its classes are instrumented as they are created.
        """
        self._applied = True
        # "__main__" is never imported: its classes are caught as they are created.
        for module in {h.module for h in self.hooks} - {"__main__"}:
            wrapt.when_imported(module)(self._patch_module)
        if main_module is not None:
            self._main_aliases = {"__main__", main_module}
            self._hook_class_creation()
            for hook in self.hooks:
                if hook.module in self._main_aliases and "." not in hook.qualname:
                    warnings.warn(f"spanprobe: {hook.target} is a module-level function of the module "
                                  "run as __main__; only methods of its classes can be instrumented",
                                  RuntimeWarning, stacklevel=2)

    def _patch_module(self, module):
        for hook in self.hooks:
            if hook.module == module.__name__:
                self._patch(hook, module, hook.qualname)

    def _hook_class_creation(self):
        original = builtins.__build_class__
        aliases, hooks = self._main_aliases, self.hooks

        def build_class(*args, **kwargs):
            cls = original(*args, **kwargs)
            try:
                if getattr(cls, "__module__", None) == "__main__":
                    for hook in hooks:
                        owner, _, attr = hook.qualname.rpartition(".")
                        if hook.module in aliases and owner == cls.__qualname__:
                            self._patch(hook, cls, attr)
            except Exception:  # never break a class statement
                log.warning("spanprobe: instrumenting class %s failed", cls, exc_info=True)
            return cls

        builtins.__build_class__ = build_class

    def _patch(self, hook, parent, path):
        """Wrap ``parent.path`` with the hook's wrapper; warn and leave it alone if impossible."""
        try:
            owner_path, _, attr = path.rpartition(".")
            owner = parent
            for part in filter(None, owner_path.split(".")):
                owner = getattr(owner, part)
            raw = inspect.getattr_static(owner, attr)
            if isinstance(raw, staticmethod):
                original, binding = raw.__func__, False
            elif isinstance(raw, classmethod):
                original, binding = raw.__func__, True
            else:
                original, binding = raw, inspect.isclass(owner)
            original = inspect.unwrap(original) if isinstance(original, wrapt.ObjectProxy) else original
            if inspect.isgeneratorfunction(original) or inspect.isasyncgenfunction(original):
                raise DeclarationError(f"{hook.target} is a generator function; spans around "
                                       "generators are not supported")
            wrapt.wrap_function_wrapper(owner, attr, hook.make_wrapper(original, binding))
            log.debug("spanprobe: instrumented %s", hook.target)
        except Exception as exc:
            warnings.warn(f"spanprobe: cannot instrument {hook.target}: {exc}", RuntimeWarning, stacklevel=2)


# --- config ---------------------------------------------------------------------------

try:
    import tomllib as _toml
except ImportError:  # Python < 3.11
    import tomli as _toml

_SECTIONS = {
    "span": ("function", {"name", "kind", "attributes", "end_attributes", "probe"}),
    "event": ("function", {"name", "attributes", "probe"}),
    "probe": ("function", {"name", "args"}),
}


def load_config(path):
    """Read a TOML config: returns an Instrumentation on a new (not loaded) Provider."""
    with open(path, "rb") as f:
        try:
            config = _toml.load(f)
        except _toml.TOMLDecodeError as exc:
            raise DeclarationError(f"{path}: {exc}") from None
    return from_config(config, str(path))


def from_config(config, where="config"):
    unknown = set(config) - {"provider", *_SECTIONS}
    if unknown:
        raise DeclarationError(f"{where}: unknown sections {sorted(unknown)}; "
                               f"expected provider, {', '.join(_SECTIONS)}")
    provider_conf = config.get("provider")
    if not isinstance(provider_conf, dict) or "name" not in provider_conf:
        raise DeclarationError(f'{where}: needs [provider] with name = "..."')
    inst = Instrumentation(Provider(provider_conf["name"]))
    for section, (required, optional) in _SECTIONS.items():
        for i, entry in enumerate(config.get(section, [])):
            here = f"{where}: [[{section}]] #{i + 1}"
            if not isinstance(entry, dict) or required not in entry:
                raise DeclarationError(f"{here}: needs {required} = \"module:Qual.name\"")
            extra = set(entry) - optional - {required}
            if extra:
                raise DeclarationError(f"{here}: unknown keys {sorted(extra)}; "
                                       f"allowed: {required}, {', '.join(sorted(optional))}")
            options = {k: v for k, v in entry.items() if k != required}
            try:
                getattr(inst, section)(entry[required], **options)
            except DeclarationError as exc:
                raise DeclarationError(f"{here}: {exc}") from None
    return inst


# --- command --------------------------------------------------------------------------

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


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy's: one set of classes.
    from spanprobe.instrument import main as _main
    sys.exit(_main())
