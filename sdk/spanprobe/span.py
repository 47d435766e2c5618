"""Spans: a start probe and an end probe around a call or a block.

``@provider.span()`` declares a span's two probes (``<name>__start`` and
``<name>__end``, layouts in docs/abi.md "Span protocol") and wraps the
function in a closure generated from source with the function's exact
parameters. Untraced, a call costs two semaphore tests more than the bare
call: no ``*args`` tuple, no ids, no context. Traced, the wrapper takes ids
from the context (spanprobe.context), fires the start probe with the
captured parameters, calls the function, and fires the end probe with the
outcome: ok, the exception's type and message, or cancelled.

The application must never notice the probe. So the traced path never
raises into the call: a value that does not fit its attribute's type is
sent as the type's zero value with the attribute's bit set in ``flags``
(the documented conversion-failure record), computed attributes that raise
are recorded the same way, and an unexpected internal error is logged once
and swallowed. Captured parameters are never called, even when callable:
only values given explicitly to a block or an event may be lazy.

wrapt is not used here: its proxy costs ~0.5 µs per call even untraced.
Code you do not own is instrumented by spanprobe.instrument, which uses
wrapt and the same SpanDef.
"""

import functools
import hashlib
import inspect
import logging
import re
import sys
import typing

from . import context
from .convert import converter
from .errors import DeclarationError
from . import firing
from .firing import param_names
from .provider import Arg
from .schema import FIXED_ARGS, SPAN_KINDS
from .types import ArgType

log = logging.getLogger("spanprobe")

#: Fixed leading arguments of each probe role (docs/abi.md, "Span protocol").
START_ARGS, END_ARGS, EVENT_ARGS = (tuple(Arg(n, ArgType(t)) for n, t in FIXED_ARGS[role])
                                    for role in ("span_start", "span_end", "event"))

STATUS_OK, STATUS_ERROR, STATUS_CANCELLED = 0, 1, 2
#: flags bit of attribute i (0-based among the probe's attributes): its value could not be converted.
FLAG_CONVERSION_FAILED = 8
MAX_ERROR_MESSAGE = 256
MAX_PROBE_BASE = 64 - len("__start")
RESULT_ATTRIBUTE = "result"

# --- attribute values ------------------------------------------------------------

_ZERO = {ArgType.STR: "", ArgType.BYTES: b"", ArgType.F64: 0.0, ArgType.BOOL: False}


class _Failed:
    """Stands for a value that could not be obtained (a computed attribute raised)."""

    __slots__ = ()

    def __repr__(self):
        return "<failed>"


FAILED = _Failed()


def _plain(value):
    """``value`` as an exact builtin type, without running any of its methods; TypeError if impossible."""
    if isinstance(value, str):
        return str.__str__(value)      # str subclasses (StrEnum) by their characters
    if isinstance(value, int):
        return int.__int__(value)      # IntEnum, bool stay numbers
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(memoryview(value))
    raise TypeError(type(value).__name__)


_logged_internal = False


def internal_error():
    """Log an SDK bug once; the traced call goes on regardless."""
    global _logged_internal
    if not _logged_internal:
        _logged_internal = True
        log.warning("spanprobe: internal error while firing a probe (ignored; reported once)",
                    exc_info=True)


def emitter(probe, fixed_count, lazy):
    """``emit(*fixed, *attributes)`` for a span or event probe: fires it and never raises.

    Generated per probe, like the probe's own fire() (firing.py, whose
    per-type inline conversions it reuses), with one difference: the fixed
    protocol arguments arrive ready for the probe site (ids as context.id_arg objects,
    strings as bytes) and are passed as they are: a child span reuses its
    parent's id objects instead of converting four ids per probe. Attribute values of the plain types convert inline; any
    other value, or a failing one, goes to the slow path, which records
    conversion failures in the flags (the last fixed argument). ``lazy``:
    zero-argument callables among the values are called there (values the
    application passes explicitly); otherwise a callable is just a value
    that does not convert.
    """
    attrs = probe.args[fixed_count:]
    checks = tuple(converter(a.type, f"probe {probe.qualname} attribute {a.name!r}") for a in attrs)
    zeros = tuple(check(_ZERO.get(a.type, 0)) for a, check in zip(attrs, checks))
    site_cell = probe._site_cell  # load() and unload() repoint it; read it at each call

    def slow(fixed, values):
        try:
            out, failed = [], 0
            for i, (v, check, zero) in enumerate(zip(values, checks, zeros)):
                try:
                    if lazy and callable(v):
                        v = v()
                    out.append(check(_plain(v)))
                except Exception:
                    out.append(zero)
                    failed |= 1 << (FLAG_CONVERSION_FAILED + i)
            site_cell.cell_contents(*fixed[:-1], fixed[-1] | failed, *out)
        except Exception:
            internal_error()

    fixed = [f"f{i}" for i in range(fixed_count)]
    params = [f"a{i}" for i in range(len(attrs))]
    fast = [firing.fast_path(i, p, a.type) for i, (p, a) in enumerate(zip(params, attrs))]
    lines = [f"def emit({', '.join(fixed + params)}):"]
    if all(f is not None for f in fast):
        # str values are type-checked before the setup calls .encode(): never a user's method.
        prechecks = [f"type({p}) is str" for p, a in zip(params, attrs) if a.type is ArgType.STR]
        setup = [line for f in fast for line in f[2]]
        lines += ["    try:",
                  f"        if {' and '.join(prechecks) or 'True'}:",
                  *(f"            {line}" for line in setup),
                  f"            if {' and '.join(f[0] for f in fast) or 'True'}:",
                  f"                return _sp_cell.cell_contents({', '.join(fixed + [f[1] for f in fast])})",
                  "    except Exception:",
                  "        pass"]
    lines.append(f"    _sp_slow(({''.join(f + ', ' for f in fixed)}), ({''.join(p + ', ' for p in params)}))")
    namespace = dict(firing.FAST_PATH_NAMES, _sp_cell=site_cell, _sp_slow=slow)
    source = "def _sp_factory():\n" + "".join(f"    {line}\n" for line in lines) + "    return emit\n"
    return firing.compile_factory(probe.qualname, source, namespace)()


def describe_exception(exc):
    """(status, error_type, error_message) of an exception that ended a span; the strings as C strings."""
    asyncio = sys.modules.get("asyncio")  # not imported: then it cannot be its CancelledError
    if asyncio is not None and isinstance(exc, asyncio.CancelledError):
        status, error_type = STATUS_CANCELLED, "asyncio.CancelledError"
    else:
        cls = type(exc)
        module = getattr(cls, "__module__", None)
        error_type = cls.__qualname__ if module in (None, "builtins") else f"{module}.{cls.__qualname__}"
        status = STATUS_ERROR
    try:
        message = str.__str__(str(exc))[:MAX_ERROR_MESSAGE]
    except Exception:
        message = "<str() of the exception failed>"
    return status, _c_string(error_type), _c_string(message)


def _c_string(text):
    """UTF-8 with no NUL: lone surrogates and NULs are written as backslash escapes."""
    return text.replace("\0", "\\0").encode("utf-8", "backslashreplace")


# --- declared spans ----------------------------------------------------------------


# A span's traced path as source, used twice: generated wrappers inline it
# (a traced call then makes no Python call beyond the probes' emitters), and
# SpanDef compiles it into begin() and finish() for with-blocks and
# instrument.py. {values} and {result}: the start and end attribute values,
# each followed by ", ". A parent is (trace_id_high, trace_id_low, span_id,
# flags, then the ids as ints; spanprobe.context): its span id, index 2, is
# the new span's parent id. OpenTelemetry is asked for a parent only once
# the application has imported it (one dict lookup until then).
_BEGIN = """\
_sp_p = _sp_get() or (_sp_OTEL in _sp_modules and _sp_ctx._otel_current())
_sp_x = _sp_bits(64) or 1
_sp_id = _sp_arg(_sp_x)
if not _sp_p:  # a root span: a new trace, parent span id 0
    _sp_hx, _sp_lx = _sp_bits(64), _sp_bits(64) or 1
    _sp_p = (_sp_arg(_sp_hx), _sp_arg(_sp_lx), 0, _sp_SAMPLED, _sp_hx, _sp_lx, 0)
_sp_hi, _sp_lo, _sp_parent, _sp_fl, _sp_hx, _sp_lx, _sp_px = _sp_p
_sp_t = _sp_set((_sp_hi, _sp_lo, _sp_id, _sp_fl, _sp_hx, _sp_lx, _sp_x))
_sp_start(_sp_id, _sp_parent, _sp_hi, _sp_lo, _sp_fl, {values})
"""
# _sp_end is the end probe's emitter, or its site itself when the end probe
# has no attributes (nothing to convert: one Python call less). A span that
# ended ok has no error type or message: NULL, which a tracer need not read
# (docs/abi.md; two user-memory reads cost ~0.5 µs in the probe here).
_END_OK = """\
try:
    _sp_reset(_sp_t)
except ValueError:  # a coroutine driven from two contexts: the span is over anyway
    pass
{end}(_sp_id, 0, None, None, 0, {result})
"""
_TRACED_NAMES = {"_sp_get": context.get_current, "_sp_set": context.set_current,
                 "_sp_reset": context.reset_current, "_sp_ctx": context, "_sp_arg": context.id_arg,
                 "_sp_bits": context.random_bits, "_sp_SAMPLED": context.SAMPLED,
                 "_sp_OTEL": context.OTEL_TRACE_MODULE, "_sp_modules": sys.modules}


def _indent(source, spaces):
    return "".join(" " * spaces + line + "\n" for line in source.splitlines())


def _args(names):
    return "".join(f"{n}, " for n in names)


class SpanDef:
    """A declared span: its probes, and how to begin and finish one instance.

    begin() and finish() never raise; begin() returns the state finish()
    needs. Decorated functions inline the same code (see _BEGIN).
    """

    def __init__(self, provider, name, kind, start_attrs, end_attrs=(), *, probe=None,
                 code=None, lazy=False):
        if not isinstance(name, str) or not name:
            raise DeclarationError(f"span name must be a non-empty str, got {name!r}")
        if kind not in SPAN_KINDS:
            raise DeclarationError(f"span {name!r}: kind {kind!r} is not one of {', '.join(SPAN_KINDS)}")
        self.name, self.kind = name, kind
        base = probe_base(name) if probe is None else probe
        start_name, end_name = f"{base}__start", f"{base}__end"
        for probe_name in (start_name, end_name):
            if probe_name in provider.probes:
                raise DeclarationError(
                    f"span {name!r} needs the probe {probe_name!r}, which provider {provider.name!r} "
                    "already has; give this span another name or probe= base name")
        self.start = declare(provider, start_name, START_ARGS, start_attrs, "span_start", f"span {name!r}")
        try:
            self.end = declare(provider, end_name, END_ARGS, end_attrs, "span_end", f"span {name!r}")
        except Exception:
            del provider.probes[start_name]  # declare both probes or neither
            raise
        self.n_start, self.n_end = len(start_attrs), len(end_attrs)
        self._end_zeros = tuple(_ZERO.get(a.type, 0) for a in end_attrs)
        self.names = dict(_TRACED_NAMES, _sp_start=emitter(self.start, len(START_ARGS), lazy),
                          _sp_end=emitter(self.end, len(END_ARGS), lazy), _sp_fail=self._fail,
                          _sp_end_cell=self.end._site_cell)
        values = [f"_sp_v{i}" for i in range(self.n_start)]
        results = [f"_sp_r{i}" for i in range(self.n_end)]
        source = ("def _sp_factory():\n"
                  f"    def begin({_args(values)}):\n"
                  + _indent(_BEGIN.format(values=_args(values)), 8)
                  + "        return _sp_t, _sp_id\n"
                  f"    def finish_ok(_sp_s, {_args(results)}):\n"
                  "        _sp_t, _sp_id = _sp_s\n"
                  + _indent(self._end_ok(results), 8)
                  + "    return begin, finish_ok\n")
        self._begin, self._finish_ok = firing.compile_factory(name, source, dict(self.names))()
        entry = {"name": name, "kind": kind, "start": start_name, "end": end_name}
        if code:
            entry["code"] = code
        provider._spans.append(entry)

    @property
    def enabled(self):
        """Whether a tracer listens to either probe of this span."""
        return bool(self.start.enabled or self.end.enabled)

    def traced_source(self, call, values, result):
        """The traced branch of a wrapper: begin, ``_sp_r = call``, end (needs self.names)."""
        return (_BEGIN.format(values=_args(values))
                + f"try:\n    _sp_r = {call}\n"
                + "except BaseException as _sp_e:\n    _sp_fail(_sp_t, _sp_id, _sp_e)\n    raise\n"
                + self._end_ok(result)
                + "return _sp_r\n")

    def _end_ok(self, result):
        end = "_sp_end" if self.n_end else "_sp_end_cell.cell_contents"
        return _END_OK.format(end=end, result=_args(result))

    def begin(self, values):
        """Make a new span current and fire the start probe; returns finish()'s state."""
        return self._begin(*values)

    def finish(self, state, exc=None, values=None):
        """Fire the end probe (ok, or the exception's status) and restore the parent context."""
        if exc is None:
            self._finish_ok(state, *(values or self._end_zeros))
        else:
            self._fail(*state, exc)

    def _fail(self, token, span_id, exc):
        context.leave(token)
        try:
            status, error_type, message = describe_exception(exc)
        except Exception:
            internal_error()
            status, error_type, message = STATUS_ERROR, b"", b""
        self.names["_sp_end"](span_id, status, error_type, message, 0, *self._end_zeros)

    def __repr__(self):
        return f"<SpanDef {self.name!r} kind={self.kind} {self.start.name}/{self.end.name}>"


def declare(provider, probe_name, fixed, attrs, role, what):
    """Declare a span or event probe: the fixed protocol arguments, then the attributes."""
    room = 12 - len(fixed)
    if len(attrs) > room:
        raise DeclarationError(f"{what}: {len(attrs)} attributes for probe {probe_name!r}; "
                               f"a {role} probe carries at most {room}")
    for a in attrs:
        if a.name in {f.name for f in fixed}:
            raise DeclarationError(f"{what}: attribute name {a.name!r} is reserved by the span protocol")
    return provider._declare(probe_name, list(fixed) + list(attrs), role)


def probe_base(name):
    """A C identifier for a span or event name, unique for distinct names that need cutting."""
    base = re.sub(r"[^A-Za-z0-9_]+", "_", name.replace(".<locals>.", ".")).strip("_") or "span"
    if base[0].isdigit():
        base = "_" + base
    if len(base) > MAX_PROBE_BASE:
        digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        base = base[:MAX_PROBE_BASE - 9] + "_" + digest
    return base


def code_location(func):
    """The schema's "code" entry of a function (OpenTelemetry code.* attributes), or None."""
    func = inspect.unwrap(func)
    code = getattr(func, "__code__", None)
    qualname = getattr(func, "__qualname__", None)
    if code is None or qualname is None:
        return None
    return {"function": f"{func.__module__}.{qualname}", "filepath": code.co_filename,
            "lineno": code.co_firstlineno}


# --- attribute declarations --------------------------------------------------------

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


# --- generated wrappers ------------------------------------------------------------


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
                  + _indent(traced(call_expr, values), 8)
                  + f"        return {call_expr}\n"
                  "    return _sp_wrapper\n")
        wrapper = firing.compile_factory(name, source, namespace)(defaults)
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


def span_decorator(provider, name=None, *, kind="internal", attributes=None, computed=None,
                   record_return=None, probe=None):
    """The decorator behind ``Provider.span`` (see there)."""
    if callable(name) or isinstance(name, (classmethod, staticmethod)):  # @provider.span without ()
        return span_decorator(provider)(name)

    def decorate(func):
        span_name = name or default_name(func, "span")
        what = f"span {span_name!r}"
        plan = Plan(func, what, attributes, computed)
        end_attrs = []
        if record_return is not None:
            end_attrs.append(Arg(*parse_attr(RESULT_ATTRIBUTE, record_return, what)))
        span = SpanDef(provider, span_name, kind, plan.attrs, end_attrs, probe=probe,
                       code=code_location(func))
        result = ["_sp_r"] if end_attrs else []

        def traced(call, values):
            return "if _sp_a.enabled or _sp_b.enabled:\n" + _indent(span.traced_source(call, values, result), 4)

        namespace = dict(span.names, _sp_a=span.start, _sp_b=span.end)
        wrapper = plan.generate(func, span_name, traced, namespace)
        wrapper.__spanprobe_span__ = span
        return wrapper

    return decorator(f"span {name!r}" if name else "span", decorate)


# --- with-blocks -------------------------------------------------------------------


class ActiveSpan:
    """A span in progress inside a ``with`` (or ``async with``) block."""

    __slots__ = ("_span", "_values", "_state", "_end_values", "_end", "ids")

    def __init__(self, span, values, end_values):
        self._span, self._values, self._state = span, values, None
        self._end_values, self._end = end_values, None
        #: (trace_id_high, trace_id_low, span_id, flags) inside the block, else None.
        self.ids = None

    def set_end(self, *values, **named):
        """Give end attributes (in order, or by name with dots read as '_'), sent when the block ends.

        May be called more than once: later values replace earlier ones.
        Values may be zero-argument callables, called at the end. An end
        attribute never given is recorded as a conversion failure (absent,
        not zero). A wrong name or count is a TypeError, traced or not.
        """
        given = self._end_values(*values, **named)
        if self._end is not None:
            given = tuple(old if new is FAILED else new for old, new in zip(self._end, given))
        self._end = given

    def __enter__(self):
        self._state = self._span.begin(self._values)
        self.ids = context.current_span() if self._state else None
        return self

    def __exit__(self, exc_type, exc, tb):
        self._span.finish(self._state, exc, self._end or self._end_values())
        self._state = self.ids = None
        return False

    async def __aenter__(self):
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb):
        return self.__exit__(exc_type, exc, tb)


class _Untraced:
    """What a span block returns while nobody listens: a no-op context manager, one per block.

    set_end() still checks its arguments, so a wrong call fails the same
    way whether a tracer is attached or not.
    """

    __slots__ = ("set_end",)
    ids = None

    def __init__(self, end_values):
        self.set_end = end_values

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


def span_block(provider, name, *, kind="internal", attributes=None, end_attributes=None, probe=None):
    """The factory behind ``Provider.span_block`` (see there)."""
    attrs = declared_attrs(attributes, f"span {name!r}")
    end_attrs = declared_attrs(end_attributes, f"span {name!r} end")
    span = SpanDef(provider, name, kind, attrs, end_attrs, probe=probe, lazy=True)
    params = param_names(attrs)  # the probe's own parameter naming: dots become '_'
    end_params = param_names(end_attrs)
    # end_values(): the end attribute values by position or name, FAILED where not given.
    source = (f"def _sp_factory():\n"
              f"    def block({', '.join(params)}):\n"
              f"        if _sp_a.enabled or _sp_b.enabled:\n"
              f"            return _sp_active(_sp_span, ({_args(params)}), _sp_end_values)\n"
              f"        return _sp_untraced\n"
              f"    def end_values({', '.join(p + '=_sp_unset' for p in end_params)}):\n"
              f"        return ({_args(end_params)})\n"
              f"    return block, end_values\n")
    namespace = {"_sp_a": span.start, "_sp_b": span.end, "_sp_span": span,
                 "_sp_active": ActiveSpan, "_sp_unset": FAILED}
    block, end_values = firing.compile_factory(name, source, namespace)()
    namespace.update(_sp_end_values=end_values, _sp_untraced=_Untraced(end_values))
    block.__name__ = block.__qualname__ = span.start.name[:-len("__start")]
    block.__doc__ = (f"Open span {name!r} ({kind}) for a with-block; attribute values in order: "
                     f"{', '.join(a.name for a in attrs) or 'none'}. Callables are evaluated only if traced."
                     + (f" End attributes, given with set_end(): {', '.join(a.name for a in end_attrs)}."
                        if end_attrs else ""))
    block.span = span
    return block
