"""A declared span: its three probes, and the code that begins and ends one.

A span is a start probe and an end probe (``<name>__start``, ``<name>__end``;
layouts in docs/abi.md "Span protocol") around a call or a block, and the
one-hit span probe (``<name>__span``, onehit.py) that carries both at once.
Traced, the code generated here takes ids from the context (context.py),
fires the start probe with the attributes, and when the call is over fires
the end probe with the outcome: ok, the exception's type and message, or
cancelled; or, for a tracer on the span probe, reads the clock at begin and
fires that probe alone at the end.
The decorators (decorators.py) inline the same code in their wrappers;
with-blocks (blocks.py) and spanprobe.instrument call it.

The application must never notice the probe. So the traced path never
raises into the call: a value that does not fit its attribute's type is
sent as the type's zero value with the attribute's bit set in ``flags``
(the documented conversion-failure record), computed attributes that raise
are recorded the same way, and an unexpected internal error is logged once
and swallowed.
"""

import hashlib
import logging
import re
import sys
import time

from ..abi.protocol import (END_ARGS, END_SUFFIX, FLAG_CONVERSION_FAILED, MAX_ERROR_MESSAGE, ROLE_SPAN,
                            ROLE_SPAN_END, ROLE_SPAN_START, SPAN_ARGS, SPAN_KINDS, SPAN_SUFFIX, START_ARGS,
                            START_SUFFIX, STATUS_CANCELLED, STATUS_ERROR, STATUS_OK, TRACE_FLAG_SAMPLED)
from ..abi.types import MAX_ARGS, ArgType
from ..errors import DeclarationError
from ..probes.convert import converter
from ..probes.firing import FAST_PATH_NAMES, comma_each, compile_factory, fast_path, indent
from ..probes.provider import MAX_NAME_LENGTH
from . import context
from .onehit import ZERO, SpanProbeCode, plain

log = logging.getLogger("spanprobe")

MAX_PROBE_BASE = MAX_NAME_LENGTH - len(START_SUFFIX)

# --- attribute values ------------------------------------------------------------


class _Failed:
    """Stands for a value that could not be obtained (a computed attribute raised)."""

    __slots__ = ()

    def __repr__(self):
        return "<failed>"


FAILED = _Failed()


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

    Generated per probe, like the probe's own fire() (probes/firing.py, whose
    per-type inline conversions it reuses), with one difference: the fixed
    protocol arguments arrive ready for the probe site (ids as context.id_arg
    objects, strings as bytes) and are passed as they are: a child span reuses
    its parent's id objects instead of converting four ids per probe.
    Attribute values of the plain types convert inline; any
    other value, or a failing one, goes to the slow path, which records
    conversion failures in the flags (the last fixed argument). ``lazy``:
    zero-argument callables among the values are called there (values the
    application passes explicitly); otherwise a callable is just a value
    that does not convert.
    """
    attrs = probe.args[fixed_count:]
    checks = tuple(converter(a.type, f"probe {probe.qualname} attribute {a.name!r}") for a in attrs)
    zeros = tuple(check(ZERO.get(a.type, 0)) for a, check in zip(attrs, checks))
    site_cell = probe.site_cell  # load() and unload() repoint it; read it at each call

    def slow(fixed, values):
        try:
            out, failed = [], 0
            for i, (v, check, zero) in enumerate(zip(values, checks, zeros)):
                try:
                    if lazy and callable(v):
                        v = v()
                    out.append(check(plain(v)))
                except Exception:
                    out.append(zero)
                    failed |= 1 << (FLAG_CONVERSION_FAILED + i)
            site_cell.cell_contents(*fixed[:-1], fixed[-1] | failed, *out)
        except Exception:
            internal_error()

    fixed = [f"f{i}" for i in range(fixed_count)]
    params = [f"a{i}" for i in range(len(attrs))]
    fast = [fast_path(i, p, a.type) for i, (p, a) in enumerate(zip(params, attrs))]
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
    lines.append(f"    _sp_slow(({comma_each(fixed)}), ({comma_each(params)}))")
    namespace = dict(FAST_PATH_NAMES, _sp_cell=site_cell, _sp_slow=slow)
    source = "def _sp_factory():\n" + "".join(f"    {line}\n" for line in lines) + "    return emit\n"
    return compile_factory(probe.qualname, source, namespace)()


def resolved(value):
    """A lazy value (a zero-argument callable given to a block) called, once; FAILED if it raises."""
    if callable(value):
        try:
            return value()
        except Exception:
            return FAILED
    return value


def snapshot(value):
    """A bytearray or memoryview start value as the bytes it holds now: the one-hit probe converts start
    values at the end, and must send what the start probe would have sent at begin."""
    if isinstance(value, (bytearray, memoryview)):
        try:
            return bytes(memoryview(value))
        except Exception:  # released: it fails to convert at the end as it would now
            return value
    return value


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
# spanprobe.instrument. {values}: the start attribute values, each followed by
# ", " (expressions: bound once to _sp_v<i> by {bind}, which the end reuses;
# bound once the new span is current in both contexts, so a computed attribute
# that reads the current span or sets a status acts on this span; {snap}: bytes
# values copied at begin for the span probe, which converts them at the end;
# {boot_offset}: a time namespace's boottime offset taken off the start time); {result}:
# the end attribute values, the same way. A parent is (trace_id_high,
# trace_id_low, span_id, flags, then the ids as ints; context.py): its span id,
# index 2, is the new span's parent id. OpenTelemetry is asked for a parent, and
# told of the new span (one context: one call, which makes the new span current
# there and says its parent; its ids are set once made), only once the
# application has imported it (one dict lookup until then). Which probes fire
# is decided here, at begin, by their semaphores (_sp_a start, _sp_b end, _sp_c
# the one-hit span probe): the start/end pair if either of its semaphores is
# set, the span probe (at the end, with the start time read now) if its own is;
# a tracer attaching mid-span gets nothing of it. Ids become probe arguments (context.id_arg, ~60 ns each) only
# for a pair: the span probe packs ints, and the context holds None where
# a span made none (its children and events make them if they need them).
_BEGIN = """\
_sp_ot = _sp_OTEL in _sp_modules and _sp_ctx.otel_begin()
_sp_p = (_sp_ot and _sp_ot.parent) or _sp_get()
_sp_x = _sp_bits(64) or 1
if not _sp_p:  # a root span: a new trace, parent span id 0
    _sp_hx, _sp_lx = _sp_bits(64), _sp_bits(64) or 1
    _sp_p = (None, None, 0, _sp_SAMPLED, _sp_hx, _sp_lx, 0)
_sp_hi, _sp_lo, _sp_parent, _sp_fl, _sp_hx, _sp_lx, _sp_px = _sp_p
if _sp_a.enabled or _sp_b.enabled:
    _sp_pair = 1
    _sp_id = _sp_arg(_sp_x)
    if _sp_hi is None:  # the trace's ids as probe arguments: made once, where a start/end pair needs them
        _sp_hi, _sp_lo = _sp_arg(_sp_hx), _sp_arg(_sp_lx)
    if _sp_parent is None:
        _sp_parent = _sp_arg(_sp_px)
else:
    _sp_pair = 0
    _sp_id = None
_sp_now = (_sp_hi, _sp_lo, _sp_id, _sp_fl, _sp_hx, _sp_lx, _sp_x)
_sp_t = _sp_set(_sp_now)
if _sp_ot:
    _sp_ot.ids = _sp_now
{bind}if _sp_c.enabled:
    _sp_t0 = _sp_clock(_sp_BOOTTIME){boot_offset}
{snap}else:
    _sp_t0 = 0
if _sp_pair:
    _sp_start(_sp_id, _sp_parent, _sp_hi, _sp_lo, _sp_fl, {values})
"""
# What finish() and _fail() need of a span begun by _BEGIN.
_STATE = "(_sp_t, _sp_ot, _sp_id, _sp_x, _sp_pair, _sp_t0, _sp_px, _sp_hx, _sp_lx, _sp_fl, ({values}))"
# _sp_end is the end probe's emitter, or its site itself when the end probe
# has no attributes (nothing to convert: one Python call less). A span that
# ended ok has no error type: NULL, which a tracer need not read (docs/abi.md;
# two user-memory reads cost ~0.5 µs in the probe here); its message is the
# description of a status the application set (spanprobe.set_status), if any.
# The span probe fires only if its semaphore is still set (a tracer that left
# mid-span gets nothing either); {one} is its statements (onehit.SpanProbeCode.source),
# inlined: no emitter call.
_END_OK = """\
try:
    _sp_reset(_sp_t)
except ValueError:  # a coroutine driven from two contexts: the span is over anyway
    pass
if _sp_ot:
    _sp_ctx.otel_leave(_sp_ot)
_sp_st, _sp_de = _sp_statuses.pop(_sp_x, _sp_UNSET) if _sp_statuses else _sp_UNSET
if _sp_pair:
    {end}(_sp_id, _sp_st, None, _sp_de, 0, {result})
if _sp_t0 and _sp_c.enabled:
{one}"""
_TRACED_NAMES = {"_sp_get": context.get_current, "_sp_set": context.set_current,
                 "_sp_reset": context.reset_current, "_sp_ctx": context, "_sp_arg": context.id_arg,
                 "_sp_bits": context.random_bits, "_sp_SAMPLED": TRACE_FLAG_SAMPLED,
                 "_sp_OTEL": context.OTEL_TRACE_MODULE, "_sp_modules": sys.modules,
                 "_sp_statuses": context.statuses, "_sp_UNSET": (STATUS_OK, None),
                 "_sp_clock": time.clock_gettime_ns, "_sp_BOOTTIME": time.CLOCK_BOOTTIME, "_sp_snap": snapshot}


def boottime_offset_ns(path="/proc/self/timens_offsets"):
    """This process's time namespace's CLOCK_BOOTTIME offset (time_namespaces(7)): what its clock reads
    more than the kernel's, which the span probe's start time must be on; 0 outside one."""
    try:
        with open(path) as f:
            for line in f:
                clock, secs, nsecs = line.split()
                if clock in ("boottime", str(time.CLOCK_BOOTTIME)):
                    return int(secs) * 1_000_000_000 + int(nsecs)
    except (OSError, ValueError):  # no time namespaces in this kernel
        pass
    return 0


#: Subtracted from the start time a span probe carries (nothing to generate outside a time namespace).
_BOOT_OFFSET_NS = boottime_offset_ns()
_BOOT_OFFSET = f" - {_BOOT_OFFSET_NS}" if _BOOT_OFFSET_NS else ""


def _bound(values):
    """Start attribute expressions -> (source binding each to a local once, the locals)."""
    names = [f"_sp_v{i}" for i in range(len(values))]
    return "".join(f"{n} = {v}\n" for n, v in zip(names, values) if n != v), names


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
        start_name, end_name, one_name = base + START_SUFFIX, base + END_SUFFIX, base + SPAN_SUFFIX
        for probe_name in (start_name, end_name, one_name):
            if probe_name in provider.probes:
                raise DeclarationError(
                    f"span {name!r} needs the probe {probe_name!r}, which provider {provider.name!r} "
                    "already has; give this span another name or probe= base name")
        declared = []
        try:  # declare all three probes or none
            self.start = declare(provider, start_name, START_ARGS, start_attrs, ROLE_SPAN_START, f"span {name!r}")
            declared.append(start_name)
            self.end = declare(provider, end_name, END_ARGS, end_attrs, ROLE_SPAN_END, f"span {name!r}")
            declared.append(end_name)
            self.one = provider.declare(one_name, SPAN_ARGS, ROLE_SPAN)
        except Exception:
            for probe_name in declared:
                del provider.probes[probe_name]
            raise
        self.n_start, self.n_end = len(start_attrs), len(end_attrs)
        # What a span that raised sends for the end attributes it never got: nothing
        # invented, each one's conversion-failure bit (docs/abi.md, "status").
        self._end_unset = (FAILED,) * len(end_attrs)
        # Lazy values (callables given to a block) are called once, where they are given: the start
        # values when the span begins traced, the end values when it ends; the emitters get values.
        self._lazy = lazy
        self._one_code = SpanProbeCode(self.one, self.start, self.end)
        self.names = dict(_TRACED_NAMES, **self._one_code.names, _sp_start=emitter(self.start, len(START_ARGS), False),
                          _sp_end=emitter(self.end, len(END_ARGS), False),
                          _sp_one=self._one_code.emit,
                          _sp_resolved=resolved,
                          _sp_fail=self._fail, _sp_end_cell=self.end.site_cell,
                          _sp_a=self.start, _sp_b=self.end, _sp_c=self.one)
        values = [f"_sp_v{i}" for i in range(self.n_start)]
        results = [f"_sp_r{i}" for i in range(self.n_end)]
        source = ("def _sp_factory():\n"
                  f"    def begin({comma_each(values)}):\n"
                  + indent(self._begin_source("".join(f"{v} = _sp_resolved({v})\n" for v in values) if lazy else "",
                                              values), 8)
                  + f"        return {_STATE.format(values=comma_each(values))}\n"
                  f"    def finish_ok(_sp_s, {comma_each(results)}):\n"
                  f"        {_STATE.format(values=comma_each(values))} = _sp_s\n"
                  + indent(self._end_ok(values, results), 8)
                  + "    return begin, finish_ok\n")
        self._begin, self._finish_ok = compile_factory(name, source, dict(self.names))()
        entry = {"name": name, "kind": kind, "start": start_name, "end": end_name, "span": one_name}
        if code:
            entry["code"] = code
        provider.add_schema_span(entry)

    @property
    def enabled(self):
        """Whether a tracer listens to any probe of this span."""
        return bool(self.one.enabled or self.start.enabled or self.end.enabled)

    def traced_source(self, call, values, result):
        """The traced branch of a wrapper: begin, ``_sp_r = call``, end (needs self.names)."""
        bind, values = _bound(values)
        state = _STATE.format(values=comma_each(values))
        return (self._begin_source(bind, values)
                + f"try:\n    _sp_r = {call}\n"
                + f"except BaseException as _sp_e:\n    _sp_fail({state}, _sp_e)\n    raise\n"
                + self._end_ok(values, result)
                + "return _sp_r\n")

    def _begin_source(self, bind, values):
        """_BEGIN for the start value locals ``values``: the bytes-typed ones snapshot for the span probe."""
        snap = "".join(f"    {v} = _sp_snap({v})\n" for v, a in zip(values, self.start.args[len(START_ARGS):])
                       if a.type is ArgType.BYTES)
        return _BEGIN.format(bind=bind, snap=snap, values=comma_each(values), boot_offset=_BOOT_OFFSET)

    def _end_ok(self, values, result):
        end = "_sp_end" if self.n_end else "_sp_end_cell.cell_contents"
        one = self._one_code.source("_sp_t0", ("_sp_x", "_sp_px", "_sp_hx", "_sp_lx", "_sp_fl"), "_sp_st", "None",
                                    "_sp_de", [*values, *result])
        return _END_OK.format(end=end, result=comma_each(result), one=indent(one, 4))

    def begin(self, values):
        """Make a new span current and fire the start probe; returns finish()'s state."""
        return self._begin(*values)

    def finish(self, state, exc=None, values=None):
        """Fire the end probe (ok, or the exception's status) and restore the parent context.

        ``values``: the end attributes given (FAILED where not), also when the block raised.
        """
        if values and self._lazy:
            values = tuple(map(resolved, values))
        if exc is None:
            self._finish_ok(state, *(values or self._end_unset))
        else:
            self._fail(state, exc, values)

    def _fail(self, state, exc, values=None):
        """End the span with the exception's status; end attributes not given are marked, not zeroed."""
        token, otel_token, span_id, span_int, pair, t0, parent, high, low, flags, start_values = state
        context.leave(token)
        if otel_token:
            context.otel_leave(otel_token)
        context.statuses.pop(span_int, None)  # the exception decides
        try:
            status, error_type, message = describe_exception(exc)
        except Exception:
            internal_error()
            status, error_type, message = STATUS_ERROR, b"", b""
        end_values = values or self._end_unset
        if pair:
            self.names["_sp_end"](span_id, status, error_type, message, 0, *end_values)
        if t0 and self.one.enabled:
            self.names["_sp_one"](t0, span_int, parent, high, low, flags, status, error_type, message,
                                  *start_values, *end_values)

    def __repr__(self):
        return f"<SpanDef {self.name!r} kind={self.kind} {self.start.name}/{self.end.name}/{self.one.name}>"


def declare(provider, probe_name, fixed, attrs, role, what):
    """Declare a span or event probe: the fixed protocol arguments, then the attributes."""
    room = MAX_ARGS - len(fixed)
    if len(attrs) > room:
        raise DeclarationError(f"{what}: {len(attrs)} attributes for probe {probe_name!r}; "
                               f"a {role} probe carries at most {room}")
    for a in attrs:
        if a.name in {f.name for f in fixed}:
            raise DeclarationError(f"{what}: attribute name {a.name!r} is reserved by the span protocol")
    return provider.declare(probe_name, list(fixed) + list(attrs), role)


def probe_base(name):
    """A C identifier for a span or event name, unique for distinct names that need cutting."""
    base = re.sub(r"[^A-Za-z0-9_]+", "_", name.replace(".<locals>.", ".")).strip("_") or "span"
    if base[0].isdigit():
        base = "_" + base
    if len(base) > MAX_PROBE_BASE:
        digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        base = base[:MAX_PROBE_BASE - 9] + "_" + digest
    return base
