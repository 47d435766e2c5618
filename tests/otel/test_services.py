"""Issue 12's proof: the same services, once with the official SDK in process, once with spanprobe's
provider traced by `spanprobe trace`, both exporting OTLP to a receiver: the same spans.

The services (demo_apps.otel_services) have no tracing code: opentelemetry-instrument
runs them with the official flask, requests, sqlite3 and starlette instrumentations.
The SDK run is tests/otel/conftest.py's; here the spanprobe run, compared span by
span with tests/support/span_compare (what may differ is listed there: ids, times,
local ports).
"""

from __future__ import annotations

import pytest

from tests.support import otel_services
from tests.support.otlp_receiver import HttpReceiver
from tests.support.span_compare import assert_same_spans
from tests.support.tracer_helpers import Tracer, wait_attached

pytestmark = pytest.mark.bpf


def spanprobe_export(front: str, expected: int, env=otel_services.SPANPROBE_ENV):
    """The scenario against ``front`` (and back) with spanprobe's provider, `spanprobe trace --pid`
    on both exporting OTLP/HTTP; the receiver's spans once ``expected`` arrived (or it timed out)."""
    receiver = HttpReceiver()
    services = otel_services.start_pair(front, env)
    tracer = None
    try:
        tracer = Tracer(*otel_services.otlp_tracer_args(receiver.endpoint, *(s.pid for s in services)))
        wait_attached(tracer, otel_services.SITES_PER_SERVICE * len(services))
        before = len(await_instrumented(services, receiver)) if env is otel_services.SPANPROBE_ENV else 0
        assert otel_services.run_scenario(services[1].url) == [200, 200, 500]
        receiver.collector.wait_for(lambda c: c.count >= before + expected, timeout=30)
        spans = otel_services.settled(receiver)[before:]
        assert tracer.stop() == 0, tracer.stderr
        return spans
    finally:
        if tracer is not None:
            tracer.kill()
        for service in reversed(services):
            service.stop()
        receiver.stop()


def await_instrumented(services, receiver, timeout: float = 20.0):
    """The default mode (spanprobe.otel.ondemand): a service puts its instrumentations to work within a
    poll of the tracer's attaching. Requests to each until it makes a span that only a traced process
    makes (back: its flask server span; front or shop: the sqlite3 client span; each its own trace,
    before the scenario's) tell. The spans received so far, once settled."""
    import time

    import requests

    deadline = time.monotonic() + timeout
    for service, path, scope in zip(services, ("/stock/0", "/items/2"), ("flask", "sqlite3")):  # back, then front
        scope = "opentelemetry.instrumentation." + scope
        seen = receiver.collector.count
        while not any(s.scope == scope for s in list(receiver.collector.spans)[seen:]):
            assert time.monotonic() < deadline, "%s made no %s span after the tracer attached" % (service.name, scope)
            assert requests.get(service.url + path, timeout=10).status_code == 200
            receiver.collector.wait_for(lambda c: c.count > seen, timeout=0.5)
    return otel_services.settled(receiver)


@pytest.mark.parametrize("front", ["front", "shop"])
def test_spanprobe_exports_the_spans_the_sdk_exports(sdk_exports, front):
    """front: Flask (WSGI); shop: Starlette under uvicorn (ASGI); both call back (Flask). In the default
    mode (spanprobe.otel.ondemand) the Flask apps were made and the instrumentations taken out before
    the tracer attached; once they are at work, the spans are the SDK's."""
    expected = sdk_exports[front]
    assert_same_spans(expected, spanprobe_export(front, len(expected)))


def test_instrumented_always_exports_the_same_spans(sdk_exports):
    """SPANPROBE_OTEL_INSTRUMENT=always: the instrumentations at work from the start, as installed."""
    expected = sdk_exports["front"]
    assert_same_spans(expected, spanprobe_export("front", len(expected), otel_services.ALWAYS_ENV))
