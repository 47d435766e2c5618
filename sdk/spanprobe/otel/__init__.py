"""spanprobe as the application's OpenTelemetry SDK: API spans leave the process as probe hits.

    from opentelemetry import trace
    import spanprobe.otel
    trace.set_tracer_provider(spanprobe.otel.TracerProvider())

or, with no code change, ``OTEL_PYTHON_TRACER_PROVIDER=spanprobe``, or under
``opentelemetry-instrument`` (with opentelemetry-distro installed too)
``OTEL_PYTHON_CONFIGURATOR=spanprobe``. Nothing is
built, batched or exported in the application: `spanprobe trace` exports.
docs/otel-mapping.md says what a span becomes.
"""

from .configurator import Configurator
from .limits import SpanLimits
from .span import Span
from .tracer import CurrentSpan, Tracer, TracerProvider

__all__ = ["Configurator", "CurrentSpan", "Span", "SpanLimits", "Tracer", "TracerProvider"]
