"""``provider.span_block``: spans around ``with`` (and ``async with``) blocks.

The block's span is a definition.SpanDef; entering begins it, leaving ends
it, with the exception's status when the block raised. Attribute values are
given at entry and may be lazy (callables, evaluated only when traced); end
attributes are given inside the block with ``set_end()``. While nobody
listens, the block is a shared no-op context manager.
"""

from ..abi.protocol import DEFAULT_KIND, START_SUFFIX
from ..probes.firing import comma_each, compile_factory, param_names
from . import context
from .definition import FAILED, SpanDef
from .signature import declared_attrs


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


def span_block(provider, name, *, kind=DEFAULT_KIND, attributes=None, end_attributes=None, probe=None):
    """The factory behind ``Provider.span_block`` (see there)."""
    attrs = declared_attrs(attributes, f"span {name!r}")
    end_attrs = declared_attrs(end_attributes, f"span {name!r} end")
    span = SpanDef(provider, name, kind, attrs, end_attrs, probe=probe, lazy=True)
    params = param_names(attrs)  # the probe's own parameter naming: dots become '_'
    end_params = param_names(end_attrs)
    # end_values(): the end attribute values by position or name, FAILED where not given.
    source = (f"def _sp_factory():\n"
              f"    def block({', '.join(params)}):\n"
              f"        if _sp_c.enabled or _sp_a.enabled or _sp_b.enabled:\n"
              f"            return _sp_active(_sp_span, ({comma_each(params)}), _sp_end_values)\n"
              f"        return _sp_untraced\n"
              f"    def end_values({', '.join(p + '=_sp_unset' for p in end_params)}):\n"
              f"        return ({comma_each(end_params)})\n"
              f"    return block, end_values\n")
    namespace = {"_sp_a": span.start, "_sp_b": span.end, "_sp_c": span.one, "_sp_span": span,
                 "_sp_active": ActiveSpan, "_sp_unset": FAILED}
    block, end_values = compile_factory(name, source, namespace)()
    namespace.update(_sp_end_values=end_values, _sp_untraced=_Untraced(end_values))
    block.__name__ = block.__qualname__ = span.start.name[:-len(START_SUFFIX)]
    block.__doc__ = (f"Open span {name!r} ({kind}) for a with-block; attribute values in order: "
                     f"{', '.join(a.name for a in attrs) or 'none'}. Callables are evaluated only if traced."
                     + (f" End attributes, given with set_end(): {', '.join(a.name for a in end_attrs)}."
                        if end_attrs else ""))
    block.span = span
    return block
