"""Span ids and the current span, kept in a ``contextvars`` context.

The current span is one ``ContextVar`` holding ``(trace_id_high,
trace_id_low, span_id, trace_flags)``. A ContextVar follows the code that
runs, not the thread: every thread starts empty, every asyncio task starts
with a copy of its creator's context, so nested calls, threads and
concurrent tasks each see their own parent without locks.

Nothing here runs while no tracer is attached: the span and event code
tests the probe's semaphore first, so an untraced call generates no id and
never touches the context.

Ids come from a ``random.Random`` seeded from ``os.urandom``, which is much
cheaper than ``uuid4``/``os.urandom`` per id and good enough for ids that
must be unique, not secret. A forked child re-seeds, or parent and child
would hand out the same ids.

When the application uses opentelemetry-api and has a valid current
OpenTelemetry span, a spanprobe span with no spanprobe parent joins that
trace as its child.
"""

import contextvars
import ctypes
import os
import random
import sys

#: Trace flags of a trace that spanprobe starts: W3C "sampled" (the tracer records it).
SAMPLED = 0x01
_MASK64 = (1 << 64) - 1

# The ids in the context are kept as ctypes.c_uint64: that is what a probe
# site needs for a 64-bit argument, so a child span passes its parent's and
# its trace's ids without converting them again.
_U64 = ctypes.c_uint64
_current = contextvars.ContextVar("spanprobe_current_span", default=None)

_rng = random.Random()
_bits = _rng.getrandbits


def _reseed():
    _rng.seed(os.urandom(32))


_reseed()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def current_span():
    """The current span as ints ``(trace_id_high, trace_id_low, span_id, trace_flags)``, or None.

    Set only inside spans that a tracer is listening to.
    """
    ctx = _current.get()
    return None if ctx is None else (ctx[0].value, ctx[1].value, ctx[2].value, ctx[3])


def parent_context():
    """What a new span or event hangs from: spanprobe's current span, else OpenTelemetry's, else None.

    ``(trace_id_high, trace_id_low, span_id, flags)``, the ids as c_uint64.
    """
    return _current.get() or _otel_current()


def start_span(emit, values):
    """Begin a span: make it current, fire ``emit``, return ``(token, span_id)`` for end_span().

    ``emit(span_id, parent_span_id, trace_id_high, trace_id_low, flags,
    *values)`` is the start probe's emitter (it never raises). Ids are
    c_uint64, but a root span's parent id is the int 0. Ids are random and
    non-zero. One function rather than several: this is most of what a
    traced call costs beyond the probes themselves.
    """
    parent = _current.get() or _otel_current()
    span_id = _U64(_bits(64) or 1)
    if parent is None:
        trace_id = _bits(128) or 1
        high, low, parent_id, flags = _U64(trace_id >> 64), _U64(trace_id & _MASK64), 0, SAMPLED
    else:
        high, low, parent_id, flags = parent
    token = _current.set((high, low, span_id, flags))
    emit(span_id, parent_id, high, low, flags, *values)
    return token, span_id


def leave(token):
    """Restore the context ``start_span`` replaced.

    A token made in another Context (a coroutine driven by hand from two
    contexts) cannot be reset; the span is over anyway, so that is ignored.
    """
    try:
        _current.reset(token)
    except ValueError:
        pass


# --- OpenTelemetry bridging --------------------------------------------------------


def _otel_current():
    """The active OpenTelemetry span's context as parent_context() gives it, or None.

    Until the application imports opentelemetry it cannot have a current
    span: so this only looks at sys.modules (spanprobe never imports
    OpenTelemetry on its own), then swaps in the real reader for good.
    """
    global _otel_current
    if "opentelemetry.trace" not in sys.modules:
        return None
    _otel_current = _make_otel_reader()
    return _otel_current()


def _no_otel():
    return None


def _span_getter(trace):
    """A function returning OpenTelemetry's current span object or None.

    The public ``trace.get_current_span()`` costs ~0.35 µs, most of a
    traced root span's budget. With the default contextvars runtime
    context, the same lookup is one ContextVar read and one dict get; any
    other runtime context goes through the public API.
    """
    try:
        from opentelemetry import context as otel_context
        from opentelemetry.trace.propagation import _SPAN_KEY
        var = otel_context._RUNTIME_CONTEXT._current_context
        if isinstance(var, contextvars.ContextVar) and isinstance(var.get(), dict):
            return lambda: var.get().get(_SPAN_KEY)
    except Exception:
        pass
    return trace.get_current_span


def _make_otel_reader():
    """Import opentelemetry-api once and return a reader for its current span."""
    try:
        from opentelemetry import trace
    except Exception:  # not installed, or broken: spanprobe works without it
        return _no_otel
    current = _span_getter(trace)

    def read():
        try:
            span = current()
            if span is None:
                return None
            sc = span.get_span_context()
            if not sc.is_valid:
                return None
            tid = sc.trace_id
            return _U64(tid >> 64), _U64(tid & _MASK64), _U64(sc.span_id), int(sc.trace_flags) & 0xFF
        except Exception:  # an SDK misbehaving must not break the traced call
            return None

    return read
