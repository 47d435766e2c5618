"""The three OTLP signals and what the protocol says about each, taken from opentelemetry-proto.

The gRPC method and the response message come from the official service
descriptors (``*_service_pb2``), so they cannot drift from the protocol; only
the OTLP/HTTP default path (``v1/<signal>``, OTLP specification "OTLP/HTTP
Request") is stated here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


@dataclass(frozen=True)
class Signal:
    name: str            # "traces", "metrics", "logs": as in OTEL_EXPORTER_OTLP_<NAME>_*
    http_path: str       # relative to a base endpoint: "v1/traces"
    grpc_method: str     # "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    response: type       # ExportTraceServiceResponse, ...
    rejected_field: str  # the partial_success count: "rejected_spans", ...


def _signal(name: str, module, service: str) -> Signal:
    descriptor = module.DESCRIPTOR.services_by_name[service]
    export = descriptor.methods_by_name["Export"]
    response = getattr(module, export.output_type.name)
    partial = response.DESCRIPTOR.fields_by_name["partial_success"].message_type
    (rejected,) = [f.name for f in partial.fields if f.name.startswith("rejected_")]
    return Signal(name, "v1/" + name, "/%s/%s" % (descriptor.full_name, export.name), response, rejected)


SIGNALS: Dict[str, Signal] = {s.name: s for s in (
    _signal("traces", trace_service_pb2, "TraceService"),
    _signal("metrics", metrics_service_pb2, "MetricsService"),
    _signal("logs", logs_service_pb2, "LogsService"),
)}
