"""TracerProvider and Tracer: the OpenTelemetry API's interfaces on spanprobe's otel_span probe.

Until a tracer listens (the probe's semaphore is 0), ``start_span`` makes no
span: it hands back the parent as a non-recording span (a root gets a new
valid context with the sampler's flag), so instrumentations see
``is_recording() == False`` and skip their attribute work, and propagation
still works. While a tracer listens, a span the sampler keeps records
(span.py) and is fired once, encoded, when it ends. A span started while
untraced is never fired; one whose end finds no listener is not either.

Every TracerProvider shares one spanprobe provider, loaded when the first
tracer is asked for: ``otel`` with its one ``span`` probe (role otel_span).
"""

import functools
import inspect
import logging
import threading
from collections.abc import Mapping

from opentelemetry.context import attach, detach
from opentelemetry import trace as trace_api
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, set_span_in_context
from opentelemetry.trace.status import Status, StatusCode

from ..abi.protocol import OTEL_SPAN_ARGS, ROLE_OTEL_SPAN, TRACE_FLAG_SAMPLED
from ..probes.provider import ProbeProvider
from ..spans.context import random_bits
from . import payload, sampling
from .attributes import clean_mapping
from .limits import SpanLimits
from .span import Span

log = logging.getLogger("spanprobe.otel")

#: The spanprobe provider and probe every TracerProvider fires.
PROVIDER_NAME, PROBE_NAME = "otel", "span"
#: W3C trace-context level 2 "random trace id" flag, which the SDK sets on the traces it starts
#: since opentelemetry 1.45 (older APIs have no such flag, and their SDKs leave it clear).
TRACE_FLAG_RANDOM = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))

_FLAGS = [TraceFlags(i) for i in range(256)]
#: How many tracers a provider keeps for reuse (scopes are few; past this, tracers are made anew).
MAX_TRACERS = 1024
_probe = None
_probe_lock = threading.Lock()


def span_probe():
    """The otel_span probe, its provider loaded on first use (once per process)."""
    global _probe
    with _probe_lock:
        if _probe is None:
            provider = ProbeProvider(PROVIDER_NAME)
            probe = provider.declare(PROBE_NAME, OTEL_SPAN_ARGS, ROLE_OTEL_SPAN)
            provider.load()
            _probe = probe
        return _probe


class TracerProvider(trace_api.TracerProvider):
    """spanprobe's OpenTelemetry TracerProvider: spans leave the process as probe hits, for a tracer to export.

    Chosen with ``OTEL_PYTHON_TRACER_PROVIDER=spanprobe`` or
    ``trace.set_tracer_provider(spanprobe.otel.TracerProvider())``. The
    sampler and span limits come from the OTEL_* environment unless given.
    """

    def __init__(self, sampler=None, span_limits=None):
        self.sampler = sampler or sampling.from_env()
        self.span_limits = span_limits or SpanLimits.from_env()
        #: Tracers of scopes without attributes, by (name, version, schema URL): instrumentations
        #: (dbapi's, on every connect) ask again and again, and a tracer encodes its scope once.
        self.tracers = {}

    def get_tracer(self, instrumenting_module_name, instrumenting_library_version=None, schema_url=None,
                   attributes=None):
        if not instrumenting_module_name:
            log.error("get_tracer called with missing module name.")
            instrumenting_module_name = ""
        if not isinstance(instrumenting_module_name, str):
            log.warning("spanprobe: get_tracer name %r is not a str; using its str()", instrumenting_module_name)
            instrumenting_module_name = str(instrumenting_module_name)
        if not isinstance(instrumenting_library_version, (str, type(None))):
            log.warning("spanprobe: get_tracer version %r is not a str; left out", instrumenting_library_version)
            instrumenting_library_version = None
        if not isinstance(schema_url, (str, type(None))):
            log.warning("spanprobe: get_tracer schema_url %r is not a str; left out", schema_url)
            schema_url = None
        key = None
        if not attributes:
            key = (instrumenting_module_name, instrumenting_library_version, schema_url)
            tracer = self.tracers.get(key)
            if tracer is not None:
                return tracer
        scope = (instrumenting_module_name, instrumenting_library_version, schema_url, scope_attributes(attributes))
        tracer = Tracer(span_probe(), scope, self.sampler, self.span_limits)
        if key is not None and len(self.tracers) < MAX_TRACERS:
            self.tracers[key] = tracer
        return tracer

    def force_flush(self, timeout_millis=30000):
        """Nothing is buffered in the application: always done."""
        return True

    def shutdown(self):
        """Nothing to flush or close: spans already left as probe hits."""


def scope_attributes(attributes):
    """get_tracer's attributes cleaned as a span's (the SDK's BoundedAttributes); anything but a mapping
    left out with a warning (the SDK would raise into the application)."""
    if not attributes:
        return {}
    if not isinstance(attributes, Mapping):
        log.warning("spanprobe: get_tracer attributes %r are not a mapping; left out", attributes)
        return {}
    return clean_mapping(attributes, None)


class Tracer(trace_api.Tracer):
    """Makes spans of one instrumentation scope (name, version, schema URL, attributes)."""

    def __init__(self, probe, scope, sampler, limits):
        self.probe = probe
        self.scope = scope
        self.scope_head, self.scope_tail = payload.scope_parts(scope)
        self.sampler = sampler
        self.limits = limits

    def start_span(self, name, context=None, kind=SpanKind.INTERNAL, attributes=None, links=(), start_time=None,
                   record_exception=True, set_status_on_exception=True):
        parent_span = trace_api.get_current_span(context)
        parent = parent_span.get_span_context()
        if not parent.is_valid:
            parent = None
        if not self.probe.enabled:
            # Untraced: nothing records, ids only for propagation.
            if parent is not None:
                return parent_span if type(parent_span) is NonRecordingSpan else NonRecordingSpan(parent)
            trace_id = random_bits(128) or 1
            flags = TRACE_FLAG_RANDOM | (TRACE_FLAG_SAMPLED if self.sampler(None, trace_id) else 0)
            return NonRecordingSpan(SpanContext(trace_id, random_bits(64) or 1, False, _FLAGS[flags]))
        if parent is None:
            trace_id = random_bits(128) or 1
            random_flag = TRACE_FLAG_RANDOM
            trace_state = None
        else:
            trace_id = parent.trace_id
            random_flag = parent.trace_flags & TRACE_FLAG_RANDOM
            trace_state = parent.trace_state
        sampled = self.sampler(parent, trace_id)
        context = SpanContext(trace_id, random_bits(64) or 1, False,
                              _FLAGS[random_flag | (TRACE_FLAG_SAMPLED if sampled else 0)], trace_state)
        if not sampled:
            return NonRecordingSpan(context)
        return Span(self, name, context, parent, kind, attributes, links, start_time,
                    record_exception, set_status_on_exception)

    def start_as_current_span(self, name, context=None, kind=SpanKind.INTERNAL, attributes=None, links=(),
                              start_time=None, record_exception=True, set_status_on_exception=True,
                              end_on_exit=True):
        return CurrentSpan(self, (name, context, kind, attributes, links, start_time, record_exception,
                                  set_status_on_exception), end_on_exit)


class CurrentSpan:
    """``start_as_current_span``'s result: a context manager, or a decorator of functions and coroutines.

    A class rather than a generator (what the API's tracers use): entering is
    an attach, leaving a detach, then what ``trace.use_span`` does with an
    exception (an Exception, not any BaseException: recorded as an event and
    made the span's ERROR status, each as asked) and the end.
    """

    __slots__ = ("_tracer", "_args", "_end_on_exit", "_token", "_span")

    def __init__(self, tracer, args, end_on_exit):
        self._tracer = tracer
        self._args = args
        self._end_on_exit = end_on_exit

    def __enter__(self):
        span = self._span = self._tracer.start_span(*self._args)
        self._token = attach(set_span_in_context(span))
        return span

    def __exit__(self, exc_type, exc, tb):
        detach(self._token)
        span = self._span
        if exc is not None and isinstance(exc, Exception) and span.is_recording():
            if self._args[6]:
                span.record_exception(exc)
            if self._args[7]:
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        if self._end_on_exit:
            span.end()
        return False

    def _again(self):
        return CurrentSpan(self._tracer, self._args, self._end_on_exit)

    def __call__(self, func):
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args, **kwargs):
                with self._again():
                    return await func(*args, **kwargs)
            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with self._again():
                return func(*args, **kwargs)
        return wrapper
