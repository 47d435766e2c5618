"""Hooks: spans, events and plain probes around functions of other modules, patched with wrapt.

wrapt does the patching (``wrap_function_wrapper``), when the module is
first imported (``when_imported``) or at once if it already is. Its ~0.5 µs
per call is acceptable for code you could not decorate. A program run with
``-m X`` executes X's code as ``__main__``, so its classes are not those of
an imported X: classes created there are instrumented as they are defined,
through a ``__build_class__`` hook. Module-level functions of a script run
by the instrument command are instrumented as they are defined: the command
compiles the script with a call to main_defined() after each such ``def``
(main_hook_calls()); those of a ``-m`` module cannot be reached (a warning
says so).

Nothing here may break the program: a target that cannot be found or
bound is reported with a warning and left alone. The warning says why, in
the user's terms: the config file, line and entry (``Hook.origin``), close
matches for a misspelt name, what to do about a function written in C.
"""

import ast
import builtins
import difflib
import importlib.util
import inspect
import logging
import pkgutil
import sys
import types
import warnings

import wrapt

from ..abi.protocol import ROLE_PLAIN
from ..errors import DeclarationError
from ..spans.definition import SpanDef
from ..spans.events import Event
from .accessors import FUNCTIONS, RESULT, attr_specs, evaluate

log = logging.getLogger("spanprobe.instrument")


def split_target(target):
    """("module", "Qual.name") from "module:Qual.name"."""
    module, sep, qualname = target.partition(":") if isinstance(target, str) else ("", "", "")
    if not sep or not module or not qualname:
        raise DeclarationError(f"target {target!r} must be 'module:Qualified.name'")
    return module, qualname


#: Callables implemented in C: wrapt cannot patch them in place (immutable types), nor can
#: inspect read their parameters.
C_CALLABLES = (types.BuiltinFunctionType, types.WrapperDescriptorType, types.MethodDescriptorType,
               types.ClassMethodDescriptorType, types.MethodWrapperType)


class Origin:
    """Where a hook was declared: a config file, its line (0 if unknown) and entry."""

    def __init__(self, path, line, entry):
        self.path, self.line, self.entry = path, line, entry

    def __str__(self):
        return f"{self.path}" + (f":{self.line}" if self.line else "") + f": {self.entry}"


class Hook:
    """One target function and what fires around it; ``wrapper`` is the wrapt wrapper."""

    def __init__(self, target, what, sources, end_sources=()):
        module, qualname = split_target(target)
        self.target, self.module, self.qualname, self.what = target, module, qualname, what
        self.sources, self.end_sources = list(sources), list(end_sources)
        #: An Origin when a config declared the hook (set by config.from_config).
        self.origin = None

    def problem(self, message):
        """Report a target that cannot be instrumented, where the user declared it; the program runs on."""
        text = (f"cannot instrument {self.target} ({self.what}): {message}; "
                "left alone, the program runs without it")
        if self.origin is None:
            warnings.warn(f"spanprobe: {text}", RuntimeWarning, stacklevel=3)
        else:  # shown as the config's file and line, followed by that line of the config
            warnings.warn_explicit(f"spanprobe: {self.origin.entry}: {text}", RuntimeWarning,
                                   self.origin.path, self.origin.line or 0)

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
        start, end, one = span.start, span.end, span.one

        def finish_ok(state, env, result):
            if end_sources:
                env = dict(env, **{RESULT: result})
            span.finish(state, None, evaluate(end_sources, env) if end_sources else None)

        async def traced_async(wrapped, env, args, kwargs):
            state = span.begin(evaluate(sources, env))
            try:
                result = await wrapped(*args, **kwargs)
            except BaseException as exc:
                span.finish(state, exc)
                raise
            finish_ok(state, env, result)
            return result

        def wrapper(wrapped, instance, args, kwargs):
            if not (one.enabled or start.enabled or end.enabled):
                return wrapped(*args, **kwargs)
            env = bind(instance, args, kwargs)
            if is_async:
                return traced_async(wrapped, env, args, kwargs)
            state = span.begin(evaluate(sources, env))
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
                fire(evaluate(sources, bind(instance, args, kwargs)))
            return wrapped(*args, **kwargs)

        return wrapper


def _fire_plain(probe):
    """Fire a plain probe with values; one that fails conversion skips the hit (no flags to say so)."""

    def fire(values):
        try:
            probe.emit(*values)
        except Exception:
            log.debug("probe %s: a value did not convert; hit skipped", probe.qualname, exc_info=True)

    return fire


# --- instrumentation ----------------------------------------------------------------


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
        self._main_functions = {}

    def span(self, target, name=None, *, kind="internal", attributes=None, end_attributes=None,
             probe=None):
        """A span around each call of ``target`` ("module:Qual.name")."""
        name = name or split_target(target)[1]
        what = f"span {name!r}"
        args, sources = attr_specs(attributes, what)
        end_args, end_sources = attr_specs(end_attributes, what)
        span = SpanDef(self.provider, name, kind, args, end_args, probe=probe,
                       code={"function": target.replace(":", ".")})
        return self._add(SpanHook(target, span, sources, end_sources))

    def event(self, target, name=None, *, attributes=None, probe=None):
        """An event (tied to the current span) fired as each call of ``target`` begins."""
        name = name or split_target(target)[1]
        args, sources = attr_specs(attributes, f"event {name!r}")
        ev = Event(self.provider, name, args, probe=probe, lazy=False)
        return self._add(EventHook(target, ev.emit, ev.probe, sources, f"event {name!r}"))

    def probe(self, target, name, *, args=None):
        """A plain probe (just the listed arguments, as the seed's file_transfer) fired at each call."""
        split_target(target)
        what = f"probe {name!r}"
        probe_args, sources = attr_specs(args, what)
        probe = self.provider.declare(name, probe_args, ROLE_PLAIN)
        return self._add(EventHook(target, _fire_plain(probe), probe, sources, what))

    def _add(self, hook):
        if self._applied:
            raise DeclarationError("declare every hook before apply()")
        self.hooks.append(hook)
        return hook

    def apply(self, main_module=None, main_functions=False):
        """Patch every target now if its module is imported, else when it is.

        ``main_module``: the module a run executes as ``__main__``; its
        classes are instrumented as they are created. ``main_functions``:
        the caller runs ``__main__`` compiled with main_hook_calls(), so its
        module-level functions are instrumented as they are defined.
        """
        global _active
        self._applied = True
        # "__main__" is never imported: its classes are caught as they are created.
        for module in {h.module for h in self.hooks} - {"__main__"}:
            # when_imported would wait forever, silently, for a module that does not exist: check
            # each level of the name as soon as its package is imported (never importing it early).
            parts = module.split(".")
            for i in range(len(parts)):
                name, package = ".".join(parts[:i + 1]), ".".join(parts[:i])
                if package:
                    wrapt.when_imported(package)(lambda _, name=name, module=module: self._exists(name, module))
                elif not self._exists(name, module):
                    break
            wrapt.when_imported(module)(self._patch_module)
        if main_module is not None:
            self._main_aliases = {"__main__", main_module}
            self._hook_class_creation()
            for hook in self.hooks:
                if hook.module in self._main_aliases and "." not in hook.qualname:
                    if main_functions:
                        self._main_functions.setdefault(hook.qualname, []).append(hook)
                    else:
                        hook.problem("it is a module-level function of the module run as __main__ "
                                     "with -m; only methods of its classes can be instrumented there "
                                     "(run the file as a script to instrument its functions)")
            if main_functions:
                _active = self

    def _exists(self, name, module):
        """Whether module ``name`` (``module`` or a package of it) can be imported; reported if not."""
        try:
            if name in sys.modules or importlib.util.find_spec(name) is not None:
                return True
        except (ImportError, ValueError):
            pass
        for hook in self.hooks:
            if hook.module == module:
                hook.problem(f"no module named {name!r} can be imported here"
                             + _close(name.rpartition(".")[2], _sibling_modules(name)))
        return False

    def main_function_names(self):
        """Names of ``__main__``'s module-level functions to instrument (for main_hook_calls)."""
        return {h.qualname for h in self.hooks if h.module in ("__main__", *self._main_aliases)
                and "." not in h.qualname}

    def main_defined(self, name):
        """A module-level function ``name`` of ``__main__`` was just defined: instrument it."""
        for hook in self._main_functions.get(name, ()):
            self._patch(hook, sys.modules["__main__"], name)

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
            if isinstance(original, C_CALLABLES):
                raise DeclarationError(
                    f"{hook.target} is implemented in C ({type(original).__name__}): C functions "
                    "cannot be wrapped in place; instrument the Python function of your program that "
                    "calls it instead (a [[span]] on it, or @provider.span on your own code)")
            if inspect.isgeneratorfunction(original) or inspect.isasyncgenfunction(original):
                raise DeclarationError(f"{hook.target} is a generator function; spans around "
                                       "generators are not supported")
            wrapt.wrap_function_wrapper(owner, attr, hook.make_wrapper(original, binding))
            log.debug("spanprobe: instrumented %s", hook.target)
        except AttributeError:
            hook.problem(_missing(parent, path))
        except Exception as exc:
            hook.problem(str(exc))


#: The Instrumentation whose ``__main__`` functions main_defined() instruments (one program per process).
_active = None


def main_defined(name):
    """Called by a script compiled with main_hook_calls() right after it defines ``name``."""
    try:
        if _active is not None:
            _active.main_defined(name)
    except Exception:  # never break the program's own def statement
        log.warning("spanprobe: instrumenting __main__.%s failed", name, exc_info=True)


def main_hook_calls(tree, names):
    """The module ``tree`` (ast.Module) with ``main_defined(name)`` after each top-level ``def`` of ``names``.

    Statements nested in if/try/with blocks at module level count as top-level.
    The call goes through ``__import__``: it adds no name to the program's globals.
    """

    def visit(body):
        out = []
        for stmt in body:
            for field in ("body", "orelse", "finalbody"):
                if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                        and isinstance(getattr(stmt, field, None), list):
                    setattr(stmt, field, visit(getattr(stmt, field)))
            for handler in getattr(stmt, "handlers", ()):
                handler.body = visit(handler.body)
            out.append(stmt)
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name in names:
                call = ast.parse(f"__import__({__name__!r}, fromlist=['main_defined'])"
                                 f".main_defined({stmt.name!r})").body[0]
                out.append(ast.copy_location(call, stmt))
        return out

    tree.body = visit(tree.body)
    return ast.fix_missing_locations(tree)


def _missing(parent, path):
    """What of ``path`` is missing on ``parent``, with the close matches of the missing name."""
    owner, name = parent, getattr(parent, "__name__", repr(parent))
    for part in path.split("."):
        if not hasattr(owner, part):
            return f"{name} has no attribute {part!r}" + _close(part, dir(owner))
        owner, name = getattr(owner, part), f"{name}.{part}"
    return f"{name} cannot be read"  # pragma: no cover - an attribute that raised AttributeError itself


def _close(name, candidates):
    matches = difflib.get_close_matches(name, [c for c in candidates if not c.startswith("__")], n=3)
    return f" (did you mean {' or '.join(repr(m) for m in matches)}?)" if matches else ""


def _sibling_modules(module):
    """Names of the modules beside ``module`` (its package's, or top-level ones)."""
    parent = module.rpartition(".")[0]
    try:
        path = importlib.import_module(parent).__path__ if parent else None
        return [m.name for m in pkgutil.iter_modules(path)]
    except Exception:
        return []
