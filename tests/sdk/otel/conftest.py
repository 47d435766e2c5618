"""Side by side: the same OpenTelemetry API calls through spanprobe's provider and through the SDK.

``pair`` gives both providers the same ids (one counter each, drawn in the
same order) so that the two exports can be compared field by field; times
are passed explicitly by the scenarios that compare them.
"""

import itertools

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans
from opentelemetry.sdk.trace import TracerProvider as SdkProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator

import spanprobe
import spanprobe.otel
from spanprobe.otel import tracer as tracer_mod
from spanprobe.testing import Recorder


class CountingIds(IdGenerator):
    """Trace and span ids alike from one iterator (a counter by default)."""

    def __init__(self, counter):
        self.counter = counter

    def generate_span_id(self):
        return next(self.counter)

    def generate_trace_id(self):
        return next(self.counter)

    def is_trace_id_random(self):
        return True


class Pair:
    """spanprobe's provider (its probe recorded) and the SDK's, fed the same ids."""

    def __init__(self, monkeypatch, sampler=None, limits=None, sdk_sampler=None, sdk_limits=None,
                 ids=lambda: itertools.count(0x1000)):
        ours = ids()
        monkeypatch.setattr(tracer_mod, "random_bits", lambda bits: next(ours))
        self.probe = tracer_mod.span_probe()
        self.recorder = Recorder(self.probe.provider)
        self.provider = spanprobe.otel.TracerProvider(sampler=sampler, span_limits=limits)
        self.exporter = InMemorySpanExporter()
        kwargs = {"id_generator": CountingIds(ids())}
        if sdk_sampler is not None:
            kwargs["sampler"] = sdk_sampler
        if sdk_limits is not None:
            kwargs["span_limits"] = sdk_limits
        self.sdk = SdkProvider(**kwargs)
        self.sdk.add_span_processor(SimpleSpanProcessor(self.exporter))

    def tracers(self, *args, **kwargs):
        return self.provider.get_tracer(*args, **kwargs), self.sdk.get_tracer(*args, **kwargs)

    def ours(self):
        """Each fired payload, parsed."""
        return [ScopeSpans.FromString(h["span"]) for h in self.recorder.of(tracer_mod.PROBE_NAME)]

    def payloads(self):
        return [h["span"] for h in self.recorder.of(tracer_mod.PROBE_NAME)]

    def theirs(self):
        """What the official OTLP encoder makes of each finished SDK span, one ScopeSpans each."""
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        out = []
        for span in self.exporter.get_finished_spans():
            request = encode_spans([span])
            scope_spans = request.resource_spans[0].scope_spans[0]
            # OTLP's Span.flags carries the W3C trace flags in bits 0-7 (the payload does; the
            # official exporter writes only the is-remote bits): add them for the comparison.
            scope_spans.spans[0].flags |= int(span.context.trace_flags)
            out.append(scope_spans)
        return out


@pytest.fixture
def pair(monkeypatch):
    made = []

    def make(**kwargs):
        p = Pair(monkeypatch, **kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        p.recorder.set_enabled(False)


@pytest.fixture
def provider():
    """A spanprobe provider for decorator and block spans (not loaded: a Recorder stands in)."""
    return spanprobe.Provider("ctxtest")
