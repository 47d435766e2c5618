"""Fixtures for the tracer tests: tracee processes, OTLP receivers."""

from __future__ import annotations

import pytest

from tests.support.otlp_receiver import GrpcReceiver, HttpReceiver
from tests.support.tracer_helpers import SpanPath, Tracee


@pytest.fixture
def tracee_factory():
    made = []

    def make(**kw) -> Tracee:
        t = Tracee(**kw)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


@pytest.fixture
def tracee(tracee_factory) -> Tracee:
    return tracee_factory()


@pytest.fixture(params=["paired", "one_hit"])
def span_path(request, tracee_factory) -> SpanPath:
    """The test runs twice: tracees whose spans have start and end probes only, and tracees whose spans
    also have the one-hit span probe (the tracer then attaches it alone, where its sampler allows)."""
    return SpanPath(request.param, tracee_factory)


@pytest.fixture
def grpc_receiver():
    r = GrpcReceiver()
    yield r
    r.stop()


@pytest.fixture
def http_receiver():
    r = HttpReceiver()
    yield r
    r.stop()
