"""Events: one-shot probes tied to the span they happen in.

An event probe carries the current span's id and trace id (spanprobe's
span, else the application's active OpenTelemetry span, else zeros) and
its attributes, so a tracer can attach it to the right span as a span
event. Layout: docs/abi.md, "Span protocol".

    cache_miss = provider.event("cache.miss", key=str)
    cache_miss.fire(key)          # a semaphore test while nobody listens

    @provider.call_event(attributes=("key",))
    def evict(key: str): ...      # fires on every call
"""

from ..abi.protocol import EVENT_ARGS, ROLE_EVENT
from ..errors import DeclarationError
from ..probes.firing import comma_each, compile_factory, param_names
from . import context
from .definition import declare, emitter, probe_base
from .signature import Plan, declared_attrs, decorator, default_name


class Event:
    """A declared event. ``fire(...)`` takes the attribute values in order (or by name).

    Values may be zero-argument callables, evaluated only while a tracer is
    attached. A value that does not fit its type is recorded as a
    conversion failure, never raised.
    """

    def __init__(self, provider, name, attrs, *, probe=None, lazy=True):
        if not isinstance(name, str) or not name:
            raise DeclarationError(f"event name must be a non-empty str, got {name!r}")
        self.name = name
        self.probe = declare(provider, probe or probe_base(name), EVENT_ARGS, attrs, ROLE_EVENT,
                             f"event {name!r}")
        self._emit = emitter(self.probe, len(EVENT_ARGS), lazy)
        provider.add_schema_event({"name": name, "probe": self.probe.name})
        params = param_names(attrs)
        source = (f"def _sp_factory():\n"
                  f"    def fire({', '.join(params)}):\n"
                  f"        if _sp_p.enabled:\n"
                  f"            _sp_emit(({comma_each(params)}))\n"
                  f"    return fire\n")
        self.fire = compile_factory(name, source, {"_sp_p": self.probe, "_sp_emit": self.emit})()

    @property
    def enabled(self):
        return self.probe.enabled

    def emit(self, values):
        """Fire with a tuple of values, enabled or not (fire() checks first)."""
        ctx = context.parent_context()
        if ctx is None:
            self._emit(0, 0, 0, 0, *values)
        elif ctx[2] is None:  # a span traced by its one-hit probe alone made no id arguments
            arg = context.id_arg
            self._emit(arg(ctx[6]), arg(ctx[4]), arg(ctx[5]), ctx[3], *values)
        else:
            self._emit(ctx[2], ctx[0], ctx[1], ctx[3], *values)

    def __call__(self, *values, **named):
        self.fire(*values, **named)

    def __repr__(self):
        return f"<Event {self.name!r} probe={self.probe.qualname}>"


def event(provider, name, attributes=None, *, probe=None, **attr_types):
    """The factory behind ``Provider.event``."""
    attrs = declared_attrs(attributes, f"event {name!r}") + declared_attrs(attr_types, f"event {name!r}")
    return Event(provider, name, attrs, probe=probe)


def _traced(call, values):
    return f"if _sp_p.enabled:\n    _sp_emit(({comma_each(values)}))\n"


def call_event_decorator(provider, name=None, *, attributes=None, computed=None, probe=None):
    """The decorator behind ``Provider.call_event``: an event fired as each call begins."""
    if callable(name) or isinstance(name, (classmethod, staticmethod)):  # used without ()
        return call_event_decorator(provider)(name)

    def decorate(func):
        event_name = name or default_name(func, "event")
        plan = Plan(func, f"event {event_name!r}", attributes, computed)
        ev = Event(provider, event_name, plan.attrs, probe=probe, lazy=False)
        wrapper = plan.generate(func, event_name, _traced, {"_sp_p": ev.probe, "_sp_emit": ev.emit})
        wrapper.__spanprobe_event__ = ev
        return wrapper

    return decorator(f"event {name!r}" if name else "event", decorate)
