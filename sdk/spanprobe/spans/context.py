"""Span ids and the current span, kept in a ``contextvars`` context.

The current span is one ``ContextVar`` holding a tuple: ``(trace_id_high,
trace_id_low, span_id, trace_flags)`` as probe arguments (see ``id_arg``),
then the three ids again as ints. A span traced by its one-hit probe alone
makes no probe arguments: its ids are None there (and its trace's too, if it
made the trace), and whoever needs them makes them from the ints. A ContextVar follows the code that
runs, not the thread: every thread starts empty, every asyncio task starts
with a copy of its creator's context, so nested calls, threads and
concurrent tasks each see their own parent without locks.

Starting a span is generated code in definition.py (a traced call's cost is
mostly Python calls, so it uses the primitives below inline); it runs only
after a probe's semaphore says a tracer listens, so an untraced call
generates no id and never touches the context.

Ids come from a ``random.Random`` seeded from ``os.urandom``, which is much
cheaper than ``uuid4``/``os.urandom`` per id and good enough for ids that
must be unique, not secret. A forked child re-seeds, or parent and child
would hand out the same ids.

One context with OpenTelemetry: once the application has imported
opentelemetry-api, a traced spanprobe span is also made OpenTelemetry's
current span while it runs (a light non-recording span with its ids:
``otel_begin``/``otel_leave``), so ``trace.get_current_span()`` returns it,
propagators inject it and OpenTelemetry spans started inside are its
children; and a new span or event hangs from OpenTelemetry's current span
first (the innermost of both kinds), spanprobe's own otherwise. Only traced
spans pay for this, and only through opentelemetry-api's public API.
"""

import contextvars
import ctypes
import os
import random
import sys
import threading

from ..abi.protocol import TRACE_FLAGS_MASK

#: The module whose presence in sys.modules says the application may have an OpenTelemetry span.
OTEL_TRACE_MODULE = "opentelemetry.trace"
_MASK64 = (1 << 64) - 1

#: An id as a probe site's 64-bit argument. ``from_param`` makes the object
#: ctypes passes as is (documented: what argtypes conversion returns); a
#: ``c_uint64`` instance would be converted to one on every call, ~25 ns an
#: argument. The context keeps ids in this form, so a child span passes its
#: parent's and its trace's ids with no conversion at all.
id_arg = ctypes.c_uint64.from_param
_current = contextvars.ContextVar("spanprobe_current_span", default=None)

#: Where ids come from; ``random_bits(64)`` draws one.
id_random = random.Random()


def _reseed():
    id_random.seed(os.urandom(32))


_reseed()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def current_span():
    """The current span as ints ``(trace_id_high, trace_id_low, span_id, trace_flags)``, or None.

    Set only inside spans that a tracer is listening to.
    """
    ctx = _current.get()
    return None if ctx is None else (ctx[4], ctx[5], ctx[6], ctx[3])


def parent_context():
    """What a new span or event hangs from: OpenTelemetry's current span (spanprobe's own spans are
    that too), else spanprobe's current span, else None.

    ``(trace_id_high, trace_id_low, span_id, flags, ...)``, the ids as probe
    arguments (``id_arg``), then as ints.
    """
    return (OTEL_TRACE_MODULE in sys.modules and otel_parent()) or _current.get()


class RemoteParent(tuple):
    """A span context another process sent (spanprobe.continue_trace), current as a parent only:
    no span of this process has its id, so status and exceptions set on it go nowhere."""

    __slots__ = ()


#: Status set by the application (spanprobe.set_status) on a traced span still running:
#: span id (int) -> (span_end status, description bytes or None). Empty almost always, so
#: ending a span tests it and moves on.
statuses = {}


#: Primitives for the generated span code (definition.py), bound once.
get_current = _current.get
set_current = _current.set
reset_current = _current.reset
random_bits = id_random.getrandbits  # a bound method: a fork re-seeds id_random in place


def leave(token):
    """Restore the context a span's ``set_current`` replaced.

    A token made in another Context (a coroutine driven by hand from two
    contexts) cannot be reset; the span is over anyway, so that is ignored.
    """
    try:
        _current.reset(token)
    except ValueError:
        pass


# --- OpenTelemetry bridging --------------------------------------------------------


def otel_parent():
    """The active OpenTelemetry span's context as parent_context() gives it, or None.

    Until the application imports opentelemetry it cannot have a current
    span: so this only looks at sys.modules (spanprobe never imports
    OpenTelemetry on its own), then binds the real bridge for good
    (_bind_otel; callers look these functions up here at each call).
    """
    if OTEL_TRACE_MODULE not in sys.modules:
        return None
    _bind_otel()
    return otel_parent()


def otel_begin():
    """Make a new traced spanprobe span OpenTelemetry's current span, before its ids are known.

    Returns the span OpenTelemetry now holds (``_light_span_type``), whose
    ``parent`` is what otel_parent() would have said and whose ``ids`` the
    caller sets to the span's context tuple before any application code runs;
    or None. Reading the parent and entering are one call, one Context read.
    Called only once opentelemetry.trace is imported; binds the real one on
    first use, as otel_parent() does.
    """
    _bind_otel()
    return otel_begin()


def otel_leave(span):
    """Restore OpenTelemetry's context that otel_begin() replaced (bound by _bind_otel())."""


_bind_lock = threading.Lock()
_otel_bound = False


def _no_otel(*args):
    return None


def _bind_otel():
    """Import opentelemetry-api once and bind otel_parent, otel_begin and otel_leave to the real ones.

    Public API only. A traced span is put in OpenTelemetry's context as a
    light span (_light_span_type) holding spanprobe's context tuple, so
    reading it back as a parent is one type check, no SpanContext. An empty
    Context has no span, which spares the span lookup in an application that
    uses OpenTelemetry but is outside any of its spans.
    """
    global _otel_bound
    with _bind_lock:  # once: two threads' first spans would each make a light span type, one unread
        if not _otel_bound:
            _bind_otel_now()
            _otel_bound = True


def _bind_otel_now():
    """_bind_otel's work, under its lock."""
    global otel_parent, otel_begin, otel_leave
    try:
        from opentelemetry import context as otel_context, trace
    except Exception:  # not installed, or broken: spanprobe works without it
        otel_parent = otel_begin = otel_leave = _no_otel
        return
    attach, detach, get_context = otel_context.attach, otel_context.detach, otel_context.get_current
    get_span, in_context = trace.get_current_span, trace.set_span_in_context
    light = _light_span_type(trace)
    new_light = light.__new__

    def parent_in(ctx):
        if not ctx:
            return None
        span = get_span(ctx)
        if type(span) is light:  # a spanprobe span: its context tuple as is
            return span.ids
        sc = span.get_span_context()
        if not sc.is_valid:
            return None
        tid = sc.trace_id
        # no probe arguments: made where a start/end pair or an event needs them (definition.py)
        return None, None, None, int(sc.trace_flags) & TRACE_FLAGS_MASK, tid >> 64, tid & _MASK64, sc.span_id

    def read():
        try:
            return parent_in(get_context())
        except Exception:  # an SDK misbehaving must not break the traced call
            return None

    def begin():
        try:
            ctx = get_context()
            span = new_light(light)
            span.span_context = None
            try:
                span.parent = parent_in(ctx)
            except Exception:  # a misbehaving current span is no parent; the new span is still current
                span.parent = None
            span.token = attach(in_context(span, ctx))
            return span
        except Exception:
            return None

    def leave(span):
        try:
            detach(span.token)
        except Exception:
            pass

    otel_parent, otel_begin, otel_leave = read, begin, leave


def _light_span_type(trace):
    """The span a traced spanprobe span is in OpenTelemetry's context: a non-recording
    ``opentelemetry.trace.Span`` holding spanprobe's context tuple (``ids``), whose SpanContext is made
    only when someone asks for it (most spans are never asked: making one up front cost ~0.3 µs); and,
    for spanprobe, its parent as parent_context() gives it and the token that restores the Context.
    Made without __init__ (otel_begin sets every slot): one Python call less a span."""
    SpanContext, TraceFlags = trace.SpanContext, trace.TraceFlags

    class SpanprobeSpan(trace.Span):
        """A traced spanprobe span as OpenTelemetry sees it: ids only, records nothing (spanprobe's
        probes do); like opentelemetry-api's NonRecordingSpan."""

        __slots__ = ("ids", "span_context", "parent", "token")

        def get_span_context(self):
            sc = self.span_context
            if sc is None:
                ids = self.ids
                sc = self.span_context = SpanContext(ids[4] << 64 | ids[5], ids[6], False, TraceFlags(ids[3]))
            return sc

        def is_recording(self):
            return False

        def end(self, end_time=None):
            pass

        def set_attributes(self, attributes):
            pass

        def set_attribute(self, key, value):
            pass

        def add_event(self, name, attributes=None, timestamp=None):
            pass

        def add_link(self, context, attributes=None):
            pass

        def update_name(self, name):
            pass

        def set_status(self, status, description=None):
            pass

        def record_exception(self, exception, attributes=None, timestamp=None, escaped=False):
            pass

        def __repr__(self):
            return f"SpanprobeSpan({self.get_span_context()!r})"

    return SpanprobeSpan

