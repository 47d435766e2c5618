"""The current span's status and handled exceptions, for decorator and block spans.

    try:
        charge(card)
    except CardDeclined as exc:
        spanprobe.record_exception(exc)          # an `exception` event on the span
        spanprobe.set_status("error", "card declined")

Both act on the current traced spanprobe span and do nothing (and never
raise) outside one or while untraced. ``set_status`` follows OpenTelemetry's
rules: OK is final, UNSET is ignored; it is sent with the span's end probe
(span_end ``status`` 3 or 4, docs/abi.md); an exception that ends the span
decides instead. ``record_exception`` fires the ``exception`` event of a
small provider of spanprobe's own (``spanprobe``, loaded on first use) with
the attributes OpenTelemetry's ``record_exception`` writes.
"""

import logging
import threading
import traceback

from ..abi.protocol import STATUS_SET_ERROR, STATUS_SET_OK
from ..probes.provider import ProbeProvider
from . import context
from .definition import MAX_ERROR_MESSAGE, describe_exception
from .events import Event
from .signature import declared_attrs

log = logging.getLogger("spanprobe")

#: The provider record_exception() fires through, and its event's attributes.
PROVIDER_NAME = "spanprobe"
EXCEPTION_ATTRIBUTES = {"exception.type": str, "exception.message": str, "exception.stacktrace": str,
                        "exception.escaped": str}
_CODES = {"ok": STATUS_SET_OK, "error": STATUS_SET_ERROR, "unset": 0}

_event = None
_lock = threading.Lock()


def _status_code(status):
    """0 (unset), STATUS_SET_ERROR or STATUS_SET_OK from "ok"/"error"/"unset", an OpenTelemetry
    StatusCode or Status; None for anything else."""
    code = getattr(status, "status_code", status)  # an opentelemetry Status
    name = getattr(code, "name", code)             # an opentelemetry StatusCode
    return _CODES.get(name.lower()) if isinstance(name, str) else None


def set_status(status, description=None):
    """Set the current span's status: "ok", "error" (with a description) or "unset"; or OpenTelemetry's
    StatusCode or Status (its description then)."""
    current = context.get_current()
    if current is None or isinstance(current, context.RemoteParent):
        return
    code = _status_code(status)
    if code is None:
        log.warning("spanprobe.set_status: %r is not a status (ok, error, unset); ignored", status)
        return
    if code == 0 or context.statuses.get(current[6], (0,))[0] == STATUS_SET_OK:
        return
    description = getattr(status, "description", None) or description
    text = None
    if code == STATUS_SET_ERROR and description:
        text = str(description)[:MAX_ERROR_MESSAGE].replace("\0", "\\0").encode("utf-8", "backslashreplace")
    context.statuses[current[6]] = (code, text)


def exception_event():
    """The ``exception`` Event, its provider loaded on first use."""
    global _event
    with _lock:
        if _event is None:
            provider = ProbeProvider(PROVIDER_NAME)
            event = Event(provider, "exception", declared_attrs(EXCEPTION_ATTRIBUTES, "event 'exception'"))
            provider.load()
            _event = event
        return _event


def record_exception(exception, escaped=False):
    """Record a handled exception on the current span: type, message, stack trace, as OpenTelemetry does."""
    current = context.get_current()
    if current is None or isinstance(current, context.RemoteParent):
        return
    event = exception_event()
    if not event.enabled:
        return
    try:
        _, error_type, message = describe_exception(exception)
        stack = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
        event.emit((error_type.decode(), message.decode(), stack, str(escaped)))
    except Exception:
        log.warning("spanprobe.record_exception failed (ignored)", exc_info=True)
