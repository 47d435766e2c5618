"""An application that uses only the OpenTelemetry API: run traced (spanprobe's provider) or with the SDK.

``scenario(tracer)`` is the whole API surface in a few spans. Run as a
script, it takes its provider from the environment (OTEL_PYTHON_TRACER_PROVIDER)
and prints the ids of its root span.
"""

import json

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode


def scenario(tracer):
    with tracer.start_as_current_span("GET /items/<id>", kind=SpanKind.SERVER,
                                      attributes={"http.route": "/items/<id>", "http.request.method": "GET",
                                                  "http.status_code": 200}) as root:
        root.set_attribute("http.response.status_code", 200)
        with tracer.start_as_current_span("SELECT items", kind=SpanKind.CLIENT) as db:
            db.set_attribute("db.system", "sqlite")
            db.set_attributes({"rows": 3, "ratio": 0.5, "ok": True, "tags": ["a", "b"], "ids": [1, 2],
                               "blob": b"\x00\xff"})
            db.add_event("cache.miss", {"key": "items:1"})
        try:
            with tracer.start_as_current_span("fails"):
                raise ValueError("bad item")
        except ValueError:
            pass
        other = tracer.start_span("linked", links=[Link(root.get_span_context(), {"why": "batch"})])
        other.update_name("linked renamed")
        other.set_status(Status(StatusCode.ERROR, "handled"))
        other.end()
        return root.get_span_context()


if __name__ == "__main__":
    ctx = scenario(trace.get_tracer("otel_app", "1.0", schema_url="https://opentelemetry.io/schemas/1.21.0"))
    print(json.dumps({"trace_id": "%032x" % ctx.trace_id, "span_id": "%016x" % ctx.span_id}))
