"""The Provider an application holds: probes (spanprobe.probes), and spans and events on them.

    provider = spanprobe.Provider("shop")

    @provider.span(attributes=("item",))
    def buy(item: str): ...

    provider.load()
"""

from .abi.protocol import DEFAULT_KIND
from .probes.provider import ProbeProvider
from .spans.blocks import span_block
from .spans.decorators import span_decorator
from .spans.events import call_event_decorator, event


class Provider(ProbeProvider):
    """A named set of probes, spans and events, backed by one shared object once loaded.

    Declare every probe, span and event, then load(); probes are visible to
    USDT tools from then until unload(). Usable as a context manager.
    """

    def span(self, name=None, *, kind=DEFAULT_KIND, attributes=None, computed=None,
             record_return=None, probe=None):
        """Decorator: each call of the function is a span (probes ``<name>__start``/``__end``).

        Works on functions, async functions (the span covers the awaits),
        methods, classmethods and staticmethods; usable as ``@provider.span``
        or ``@provider.span("name", ...)``. ``name`` defaults to the
        function's qualified name. ``attributes``: parameters to capture,
        as True (all), names (types from annotations) or ``{param: type}``
        / ``{param: ("attribute.name", type)}``. ``computed``: ``{"attr":
        (type, fn)}``, fn called with the call's arguments, only when
        traced. ``record_return``: the return value's type (attribute
        ``result``) or ``("name", type)``. docs/sdk-spans.md has the details.
        """
        return span_decorator(self, name, kind=kind, attributes=attributes, computed=computed,
                              record_return=record_return, probe=probe)

    def span_block(self, name, *, kind=DEFAULT_KIND, attributes=None, end_attributes=None, probe=None):
        """Declare a span for ``with`` blocks; returns ``block(*values)`` -> context manager.

        ``attributes`` is ``{name: type}`` (or (name, type) pairs); values
        are given at entry, in that order or by name (dots read as '_'):
        ``with db_query(sql): ...``. ``end_attributes`` (same form) are
        known only later, such as a response's status: give them inside
        the block with ``span.set_end(...)``; the end probe carries them.
        """
        return span_block(self, name, kind=kind, attributes=attributes, end_attributes=end_attributes,
                          probe=probe)

    def event(self, name, attributes=None, *, probe=None, **attr_types):
        """Declare an event probe tied to the current span; returns an Event (``.fire(...)``)."""
        return event(self, name, attributes, probe=probe, **attr_types)

    def call_event(self, name=None, *, attributes=None, computed=None, probe=None):
        """Decorator: fire an event at each call of the function (attributes as for span())."""
        return call_event_decorator(self, name, attributes=attributes, computed=computed, probe=probe)
