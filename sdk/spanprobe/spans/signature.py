"""What a generated wrapper needs from the function it wraps, and attribute declarations.

The decorators (decorators.py, events.py) wrap a function in a closure
generated from source with the function's exact parameters: forwarding()
reproduces its signature, parameter_attrs() and computed_attrs() say which
values become attributes and their types (from annotations, or declared),
and Plan puts it together. Everything a declaration can get wrong is
refused here, at decoration time, with a DeclarationError naming it.
"""

import functools
import inspect
import typing

from ..abi.types import Arg, ArgType
from ..errors import DeclarationError
from ..probes.firing import compile_factory, indent
from .definition import FAILED


def code_location(func):
    """The schema's "code" entry of a function (OpenTelemetry code.* attributes), or None."""
    func = inspect.unwrap(func)
    code = getattr(func, "__code__", None)
    qualname = getattr(func, "__qualname__", None)
    if code is None or qualname is None:
        return None
    return {"function": f"{func.__module__}.{qualname}", "filepath": code.co_filename,
            "lineno": code.co_firstlineno}


# --- attribute declarations ------------------------------------------------------

_ANNOTATION_NAMES = {"int": ArgType.I64, "float": ArgType.F64, "bool": ArgType.BOOL,
                     "str": ArgType.STR, "bytes": ArgType.BYTES}


def parse_type(value, what):
    """An ArgType from a declared type; DeclarationError naming ``what`` if it cannot be carried."""
    try:
        return ArgType.parse(value)
    except TypeError as exc:
        raise DeclarationError(f"{what}: {exc}") from None


def parse_attr(name, spec, what):
    """``name: type`` or ``name: (attribute name, type)`` -> (attribute name, ArgType)."""
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        name, spec = spec
    return name, parse_type(spec, f"{what} attribute {name!r}")


def declared_attrs(attributes, what):
    """[Arg] from {name: type} or [(name, type), ...]: attributes whose values are given explicitly."""
    items = attributes.items() if isinstance(attributes, dict) else (attributes or ())
    out = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise DeclarationError(f"{what}: attributes must be {{name: type}} or (name, type) pairs, "
                                   f"got {item!r}")
        out.append(Arg(*parse_attr(item[0], item[1], what)))
    return out


def _annotation_type(annotation):
    """The ArgType an annotation stands for (Optional[X] counts as X: None then converts as a failure)."""
    args = typing.get_args(annotation)
    if args and type(None) in args and len(args) == 2:
        annotation = next(a for a in args if a is not type(None))
    if isinstance(annotation, str):
        annotation = _ANNOTATION_NAMES.get(annotation.strip(), annotation)
    if isinstance(annotation, ArgType):
        return annotation
    return ArgType.parse(annotation)


def _hints(func):
    try:
        return typing.get_type_hints(func)
    except Exception:  # unresolvable forward references: use what is written
        return dict(getattr(inspect.unwrap(func), "__annotations__", {}))


def _capturable(param):
    return param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)


def parameter_attrs(func, params, attributes, what):
    """[(attribute name, ArgType, parameter name)] for the parameters to capture."""
    if attributes is None or attributes is False:
        return []
    if attributes is True:
        names = [p.name for i, p in enumerate(params.values()) if _capturable(p)
                 and not (i == 0 and p.name in ("self", "cls") and p.annotation is p.empty)]
        attributes = names
    if isinstance(attributes, str):
        attributes = [attributes]
    hints = None
    out = []
    items = attributes.items() if isinstance(attributes, dict) else ((n, None) for n in attributes)
    for param_name, spec in items:
        param = params.get(param_name)
        if param is None or not _capturable(param):
            known = ", ".join(n for n, p in params.items() if _capturable(p)) or "none"
            raise DeclarationError(f"{what}: {param_name!r} is not a parameter that can be captured "
                                   f"(parameters: {known}); use computed= for other values")
        if spec is not None:
            attr_name, arg_type = parse_attr(param_name, spec, what)
        else:
            hints = _hints(func) if hints is None else hints
            if param_name not in hints:
                raise DeclarationError(f"{what}: parameter {param_name!r} has no annotation; declare "
                                       f"its type, e.g. attributes={{{param_name!r}: str}}")
            try:
                arg_type = _annotation_type(hints[param_name])
            except TypeError:
                raise DeclarationError(
                    f"{what}: parameter {param_name!r} is annotated {hints[param_name]!r}, which a probe "
                    "cannot carry; declare a carriable type for it, e.g. "
                    f"attributes={{{param_name!r}: str}}") from None
            attr_name = param_name
        out.append((attr_name, arg_type, param_name))
    return out


# --- generated wrappers ----------------------------------------------------------


def _signature(func):
    """The signature calls are forwarded with (func's own, not what __wrapped__ claims), or None."""
    try:
        return inspect.signature(func, follow_wrapped=False)
    except (TypeError, ValueError):
        return None


def forwarding(sig):
    """(parameter list, call arguments, defaults) reproducing ``sig``; ``_sp_d`` holds the defaults.

    With no signature the wrapper takes and passes ``*args, **kwargs``.
    """
    if sig is None:
        return "*_sp_args, **_sp_kwargs", "*_sp_args, **_sp_kwargs", ()
    params, call, defaults = [], [], []
    kinds = inspect.Parameter
    posonly_open = star_done = False
    for p in sig.parameters.values():
        if p.name.startswith("_sp_"):
            raise DeclarationError(f"parameter {p.name!r}: names starting with '_sp_' are reserved by spanprobe")
        if posonly_open and p.kind is not kinds.POSITIONAL_ONLY:
            params.append("/")
            posonly_open = False
        text = p.name
        if p.default is not p.empty:
            text += f"=_sp_d[{len(defaults)}]"
            defaults.append(p.default)
        if p.kind is kinds.POSITIONAL_ONLY:
            posonly_open = True
            call.append(p.name)
        elif p.kind is kinds.POSITIONAL_OR_KEYWORD:
            call.append(p.name)
        elif p.kind is kinds.VAR_POSITIONAL:
            text, star_done = "*" + p.name, True
            call.append(text)
        elif p.kind is kinds.KEYWORD_ONLY:
            if not star_done:
                params.append("*")
                star_done = True
            call.append(f"{p.name}={p.name}")
        else:
            text = "**" + p.name
            call.append(text)
        params.append(text)
    if posonly_open:
        params.append("/")
    return ", ".join(params), ", ".join(call), tuple(defaults)


def guarded(fn, *args, **kwargs):
    """Call a computed attribute; FAILED (recorded as a conversion failure) if it raises."""
    try:
        return fn(*args, **kwargs)
    except Exception:
        return FAILED


def computed_attrs(computed, what):
    """[(attribute name, ArgType, callable)] from {name: (type, callable)}."""
    out = []
    for attr_name, spec in (computed or {}).items():
        if not (isinstance(spec, tuple) and len(spec) == 2 and callable(spec[1])):
            raise DeclarationError(f"{what}: computed attribute {attr_name!r} must be (type, callable), "
                                   f"got {spec!r}")
        out.append((attr_name, parse_type(spec[0], f"{what} computed attribute {attr_name!r}"), spec[1]))
    return out


def check_computed_signature(fn, sig, what):
    """Refuse, at decoration time, a computed callable that cannot take the call's arguments.

    At call time a failing computed attribute is only a conversion-failure
    bit; a wrong signature would fail on every call, so say so now.
    """
    fn_sig = _signature(fn)
    if fn_sig is None or sig is None:
        return
    positional, keywords = [], {}
    for param in sig.parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            positional.append(param.name)
        elif param.kind is param.KEYWORD_ONLY:
            keywords[param.name] = param.name
    try:
        fn_sig.bind(*positional, **keywords)
    except TypeError as exc:
        raise DeclarationError(
            f"{what}: {fn!r} is called with the function's arguments {sig}, but {exc}") from None


def check_decoratable(func, what):
    """Refuse what cannot be wrapped as a call, at decoration time."""
    if isinstance(func, (classmethod, staticmethod)):
        return
    if inspect.isclass(func):
        raise DeclarationError(f"{what}: cannot decorate the class {func.__qualname__}; decorate its methods")
    if not callable(func):
        raise DeclarationError(f"{what}: {func!r} ({type(func).__name__}) is not callable")
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise DeclarationError(
            f"{what}: {getattr(func, '__qualname__', func)!r} is a generator function; a span around the "
            "call would end before the first item. Decorate the code that consumes it, or use "
            "span_block() inside the generator")


def default_name(func, what):
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if not isinstance(name, str):
        raise DeclarationError(f"{what}: {func!r} has no __qualname__; give the span a name")
    return name


class Plan:
    """What a generated wrapper evaluates when traced: parameter names and computed callables."""

    def __init__(self, func, what, attributes, computed):
        self.sig = _signature(func)
        params = self.sig.parameters if self.sig is not None else {}
        if attributes and self.sig is None:
            raise DeclarationError(f"{what}: the parameters of {func!r} cannot be inspected; "
                                   "use computed= attributes")
        self.forward = forwarding(self.sig)  # refuses reserved parameter names before anything is declared
        self.captured = parameter_attrs(func, params, attributes, what)
        self.computed = computed_attrs(computed, what)
        for attr_name, _, fn in self.computed:
            check_computed_signature(fn, self.sig, f"{what}: computed attribute {attr_name!r}")
        self.attrs = [Arg(n, t) for n, t, _ in self.captured] + [Arg(n, t) for n, t, _ in self.computed]

    def generate(self, func, name, traced, namespace):
        """Build the wrapper of ``func``. ``traced(call, values)`` returns the source run first.

        ``call`` is the expression calling ``func`` with the wrapper's
        arguments (awaited for a coroutine function), ``values`` the
        attribute value expressions; the wrapper then returns ``call``.
        """
        params, call, defaults = self.forward
        values = [p for _, _, p in self.captured]
        values += [f"_sp_guard(_sp_c{i}, {call})" for i in range(len(self.computed))]
        namespace.update({f"_sp_c{i}": fn for i, (_, _, fn) in enumerate(self.computed)})
        namespace.update(_sp_f=func, _sp_d=defaults, _sp_guard=guarded)
        is_async = inspect.iscoroutinefunction(func)
        call_expr = f"{'await ' if is_async else ''}_sp_f({call})"
        source = (f"def _sp_factory(_sp_d):\n"
                  f"    {'async ' if is_async else ''}def _sp_wrapper({params}):\n"
                  + indent(traced(call_expr, values), 8)
                  + f"        return {call_expr}\n"
                  "    return _sp_wrapper\n")
        wrapper = compile_factory(name, source, namespace)(defaults)
        return functools.update_wrapper(wrapper, func)


def decorator(what, decorate):
    """Apply ``decorate`` to a function, or to the function inside a classmethod/staticmethod."""

    def apply(func):
        check_decoratable(func, what)
        if isinstance(func, (classmethod, staticmethod)):
            inner = func.__func__
            check_decoratable(inner, what)
            return type(func)(decorate(inner))
        return decorate(func)

    return apply
