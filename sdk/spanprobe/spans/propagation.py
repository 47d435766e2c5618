"""Trace context across processes for applications that only use spanprobe's decorators.

    with spanprobe.continue_trace(request.headers):   # an incoming traceparent
        handle(request)                              # its spans join that trace
    spanprobe.inject(outgoing_headers)               # send the current span on

With opentelemetry-api installed these are its standard propagators
(``opentelemetry.propagate``, configured by OTEL_PROPAGATORS: W3C trace
context and baggage by default), and spanprobe's spans take part through the
one context (context.py). Without it, W3C ``traceparent`` alone, read and
written here. Bad headers are ignored, never raised.
"""

import re

from ..abi.protocol import TRACE_FLAGS_MASK
from . import context

TRACEPARENT = "traceparent"
_TRACEPARENT = re.compile(r"\A([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-|\Z)")
_MASK64 = (1 << 64) - 1


def _otel():
    """opentelemetry's propagate and context modules, or None when opentelemetry-api is missing or
    cannot be used (``opentelemetry.propagate`` raises on import for an unknown OTEL_PROPAGATORS)."""
    try:
        from opentelemetry import context as otel_context, propagate
    except Exception:
        return None
    return otel_context, propagate


def _header(headers, name):
    get = getattr(headers, "get", None)
    value = get(name) if get else None
    if value is None and get:
        value = get(name.title())
    return value[0] if isinstance(value, (list, tuple)) and value else value


def parse_traceparent(value):
    """(trace_id, span_id, flags) from a W3C traceparent header, or None if it is not a valid one."""
    m = _TRACEPARENT.match(value.strip().lower()) if isinstance(value, str) else None
    if not m or m.group(1) == "ff" or (m.group(1) == "00" and m.group(5)):
        return None
    trace_id, span_id = int(m.group(2), 16), int(m.group(3), 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(m.group(4), 16)


class continue_trace:
    """Context manager: spans begun inside continue the trace that ``headers`` (a mapping) carry."""

    def __init__(self, headers):
        self._headers = headers
        self._token = None
        self._otel = None

    def __enter__(self):
        otel = _otel()
        if otel is not None:
            otel_context, propagate = otel
            try:  # headers its getter cannot read (an ASGI list of pairs): ignored, as documented
                self._token = otel_context.attach(propagate.extract(self._headers))
                self._otel = otel_context
            except Exception:
                pass
            return self
        parsed = parse_traceparent(_header(self._headers, TRACEPARENT))
        if parsed is not None:
            trace_id, span_id, flags = parsed
            hi, lo = trace_id >> 64, trace_id & _MASK64
            arg = context.id_arg
            self._token = context.set_current(context.RemoteParent(
                (arg(hi), arg(lo), arg(span_id), flags & TRACE_FLAGS_MASK, hi, lo, span_id)))
        return self

    def __exit__(self, *exc):
        if self._token is not None:
            if self._otel is not None:
                self._otel.detach(self._token)
            else:
                context.leave(self._token)
        return False


def inject(headers):
    """Write the current trace context into ``headers`` (a mutable mapping), for an outgoing request."""
    otel = _otel()
    if otel is not None:
        try:
            otel[1].inject(headers)
        except Exception:  # headers that cannot be written to: nothing sent, never raised
            pass
        return
    current = context.current_span()
    if current is not None:
        hi, lo, span_id, flags = current
        headers[TRACEPARENT] = "00-%032x-%016x-%02x" % (hi << 64 | lo, span_id, flags)
