"""Span limits from the environment, with the names and defaults of the OpenTelemetry SDK.

opentelemetry.sdk.trace.SpanLimits is the reference; the application path
must not import the SDK, so the few rules are restated here: a model-specific
variable wins over OTEL_ATTRIBUTE_COUNT_LIMIT, which wins over the default;
an empty value means no limit. A value that is not a non-negative integer is
reported (naming the variable) and its default used: the SDK would raise,
and tracing never makes the application raise.
"""

import logging
import os
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger("spanprobe.otel")

#: The SDK's default for every count limit.
DEFAULT_COUNT = 128
_UNSET = object()


def _from_env(environ, name, default):
    if name not in environ:
        return default
    text = environ[name].strip().lower()
    if text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        log.warning("spanprobe: %s must be a non-negative integer but got %r; using %s",
                    name, environ[name], default)
        return default
    return value


@dataclass(frozen=True)
class SpanLimits:
    """The SDK's span limits (None: no limit)."""

    max_span_attributes: Optional[int] = DEFAULT_COUNT
    max_events: Optional[int] = DEFAULT_COUNT
    max_links: Optional[int] = DEFAULT_COUNT
    max_event_attributes: Optional[int] = DEFAULT_COUNT
    max_link_attributes: Optional[int] = DEFAULT_COUNT
    max_attribute_length: Optional[int] = None
    max_span_attribute_length: Optional[int] = None

    @classmethod
    def from_env(cls, environ=None):
        """The limits the OTEL_* variables of ``environ`` (default os.environ) set."""
        env = os.environ if environ is None else environ
        global_count = _from_env(env, "OTEL_ATTRIBUTE_COUNT_LIMIT", None)
        count_default = DEFAULT_COUNT if global_count is None else global_count
        length = _from_env(env, "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", None)
        return cls(
            max_span_attributes=_from_env(env, "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", count_default),
            max_events=_from_env(env, "OTEL_SPAN_EVENT_COUNT_LIMIT", DEFAULT_COUNT),
            max_links=_from_env(env, "OTEL_SPAN_LINK_COUNT_LIMIT", DEFAULT_COUNT),
            max_event_attributes=_from_env(env, "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", count_default),
            max_link_attributes=_from_env(env, "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", count_default),
            max_attribute_length=length,
            max_span_attribute_length=_from_env(env, "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", length),
        )
