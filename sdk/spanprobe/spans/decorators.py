"""``@provider.span``: each call of a function is a span.

The decorator declares the span's two probes (definition.SpanDef) and wraps
the function in a closure generated from source with the function's exact
parameters (signature.Plan). Untraced, a call costs three semaphore tests more
than the bare call: no ``*args`` tuple, no ids, no context. Traced, the
wrapper runs the span's begin and end code inline around the call.
Captured parameters are never called, even when callable: only values given
explicitly to a block or an event may be lazy.

wrapt is not used here: its proxy costs ~0.5 µs per call even untraced.
Code you do not own is instrumented by spanprobe.instrument, which uses
wrapt and the same SpanDef.
"""

from ..abi.protocol import DEFAULT_KIND
from ..abi.types import Arg
from ..probes.firing import indent
from .definition import SpanDef
from .signature import Plan, code_location, decorator, default_name, parse_attr

#: The attribute a recorded return value is named by default.
RESULT_ATTRIBUTE = "result"


def span_decorator(provider, name=None, *, kind=DEFAULT_KIND, attributes=None, computed=None,
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
            return ("if _sp_c.enabled or _sp_a.enabled or _sp_b.enabled:\n"
                    + indent(span.traced_source(call, values, result), 4))

        wrapper = plan.generate(func, span_name, traced, dict(span.names))
        wrapper.__spanprobe_span__ = span
        return wrapper

    return decorator(f"span {name!r}" if name else "span", decorate)
