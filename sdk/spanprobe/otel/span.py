"""A recording span of spanprobe's OpenTelemetry provider: kept in memory, fired once when it ends.

It behaves as the SDK's span does (opentelemetry.sdk.trace.Span is the
reference): attributes, events and links under the span limits, status
rules (OK is final, UNSET ignored), ``record_exception`` attributes, warnings
instead of errors for calls after end(). Each event is encoded when it is
added; when the span ends and a tracer listens, the rest is encoded
(payload.py) and fired through the otel_span probe; when nobody listens any
more it is simply dropped, never half-sent.
"""

import logging
import threading
import time
import traceback
from types import MappingProxyType

from opentelemetry import trace as trace_api
from opentelemetry.trace.status import Status, StatusCode

from ..abi import otlp
from ..probes.convert import bytes_arg
from . import payload
from .attributes import Attributes

log = logging.getLogger("spanprobe.otel")
#: end() sets the end time once, also when threads race to end one span (one lock for all: it is held
#: for two attribute accesses).
_end_lock = threading.Lock()


#: The attributes of an event given none (read-only: events share it).
_NO_ATTRIBUTES = MappingProxyType({})


def _link_ok(context, attributes):
    """The SDK keeps a link whose context is valid, or that carries attributes or a trace state."""
    return bool(context and (context.is_valid or attributes or context.trace_state))


class Span(trace_api.Span):
    """A span that records, made by spanprobe.otel.Tracer while a tracer listens and the sampler keeps it."""

    # What every span starts with, as class attributes: a span stores its own only on a change
    # (fewer stores per span; events and links become lists when the first is added).
    events = links = ()
    dropped_events = dropped_links = 0
    status_code = StatusCode.UNSET.value
    status_description = None
    end_time = None

    def __init__(self, tracer, name, context, parent, kind, attributes, links, start_time,
                 record_exception, set_status_on_exception):
        limits = tracer.limits
        self.tracer = tracer
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.attributes = Attributes(limits.max_span_attributes, limits.max_span_attribute_length, attributes)
        for link in links or ():
            if link and _link_ok(link.context, link.attributes):
                self._append_link(link.context, link.attributes)
        self.start_time = start_time if start_time is not None else time.time_ns()
        self.record_exception_on_exit = record_exception
        self.set_status_on_exception = set_status_on_exception

    def get_span_context(self):
        return self.context

    def is_recording(self):
        return self.end_time is None

    def _ended(self, what):
        if self.end_time is not None:
            log.warning("Tried calling %s on an ended span.", what)
            return True
        return False

    def set_attribute(self, key, value):
        if self.end_time is not None:
            log.warning("Setting attribute on ended span.")
            return
        attrs = self.attributes
        if type(value) in attrs.kept and type(key) is str and key:
            # The common case inline (instrumentations set attributes one by one): what Attributes.set
            # does for a valid key and a value that needs no cleaning, while there is room.
            items = attrs.items
            if key in items:
                del items[key]
                items[key] = value
                return
            if attrs.max_count is None or len(items) < attrs.max_count:
                items[key] = value
                return
        attrs.set(key, value)

    def set_attributes(self, attributes):
        if self.end_time is not None:
            log.warning("Setting attribute on ended span.")
            return
        self.attributes.update(attributes)

    def add_event(self, name, attributes=None, timestamp=None):
        if self.end_time is not None:
            log.warning("Tried calling add_event on an ended span.")
            return
        limits = self.tracer.limits
        if attributes:
            attrs = Attributes(limits.max_event_attributes, limits.max_attribute_length, attributes)
            items, dropped = attrs.items, attrs.dropped
        else:
            items, dropped = _NO_ATTRIBUTES, 0
        ts = timestamp if timestamp is not None else time.time_ns()
        # Encoded now, once; the values stay for a stack trace that must be cut to fit (payload.Cut).
        try:
            event = (name, items, dropped, ts, otlp.event_field(ts, name, items, dropped, payload.left_out))
        except Exception as exc:  # a name OTLP cannot carry: counted where OTLP counts dropped events
            log.warning("spanprobe: event %r dropped: %s", name, exc)
            self.dropped_events += 1
            return
        events = self.events
        if not events:
            events = self.events = []
        if limits.max_events is None or len(events) < limits.max_events:
            events.append(event)
        else:
            self._append(events, limits.max_events, "dropped_events", event)

    def add_link(self, context, attributes=None):
        if not _link_ok(context, attributes) or self._ended("add_link"):
            return
        self._append_link(context, attributes)

    def _append_link(self, context, attributes):
        limits = self.tracer.limits
        if not self.links:
            self.links = []
        self._append(self.links, limits.max_links, "dropped_links",
                     (context, Attributes(limits.max_link_attributes, limits.max_attribute_length, attributes)))

    def _append(self, items, limit, counter, item):
        """Append under ``limit`` (None: none), dropping the oldest item and counting it, as the SDK's BoundedList."""
        if limit is not None and len(items) >= limit:
            setattr(self, counter, getattr(self, counter) + 1)
            if not limit:
                return
            del items[0]
        items.append(item)

    def update_name(self, name):
        if not self._ended("update_name"):
            self.name = name

    def set_status(self, status, description=None):
        if self._ended("set_status"):
            return
        if self.status_code == StatusCode.OK.value:
            return  # OK is final
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                log.warning("Description %s ignored. Use either `Status` or `(StatusCode, Description)`",
                            description)
        elif isinstance(status, StatusCode):
            if status is StatusCode.UNSET:
                return
            status = Status(status, description)
        else:
            log.warning("spanprobe: set_status() takes a Status or a StatusCode, not %s; ignored",
                        type(status).__name__)
            return
        self.status_code = status.status_code.value
        self.status_description = status.description

    def record_exception(self, exception, attributes=None, timestamp=None, escaped=False):
        self.add_event("exception", exception_attributes(exception, attributes, escaped), timestamp)

    def end(self, end_time=None):
        with _end_lock:
            if self.end_time is not None:
                log.warning("Calling end() on an ended span.")
                return
            self.end_time = end_time if end_time is not None else time.time_ns()
        probe = self.tracer.probe
        if not probe.enabled:
            return  # nobody listens any more: dropped whole, never half-sent
        try:
            # The probe site itself, the one argument framed as emit() would (bytes_arg): a payload is
            # bytes within MAX_BYTES, so emit()'s checked conversion would only cost (~0.6 µs a span).
            probe.site_cell.cell_contents(bytes_arg(payload.encode(self)))
        except Exception:  # a bug here must not reach the application: the span is skipped, counted
            probe.conversion_failures += 1
            if probe.conversion_failures == 1:
                log.warning("spanprobe: could not fire span %r (skipped; later ones counted in the otel_span "
                            "probe's conversion_failures)", self.name, exc_info=True)

    def __exit__(self, exc_type, exc_val, exc_tb):
        if exc_val is not None and self.is_recording():
            if self.record_exception_on_exit:
                self.record_exception(exception=exc_val, escaped=True)
            if self.set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        super().__exit__(exc_type, exc_val, exc_tb)

    def __repr__(self):
        return f'{type(self).__name__}(name="{self.name}", context={self.context})'


def exception_attributes(exception, attributes=None, escaped=False):
    """The ``exception`` event's attributes, as the SDK's record_exception writes them."""
    try:
        stacktrace = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
    except Exception:  # a broken __str__ must not raise into the application
        stacktrace = ""
    cls = type(exception)
    module = cls.__module__
    try:
        message = str(exception)
    except Exception:
        message = "<str() of the exception failed>"
    attrs = {
        "exception.type": f"{module}.{cls.__qualname__}" if module and module != "builtins" else cls.__qualname__,
        "exception.message": message,
        "exception.stacktrace": stacktrace,
        "exception.escaped": str(escaped),
    }
    if attributes:
        attrs.update(attributes)
    return attrs
