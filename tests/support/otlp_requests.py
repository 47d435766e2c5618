"""Small Export*ServiceRequests of each signal, built with the official messages, for the OTLP client tests."""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import NumberDataPoint
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def request(signal: str, items: int, padding: int = 0):
    """An Export*ServiceRequest of ``signal`` with ``items`` spans / data points / log records;
    each carries ``padding`` repeated characters (compressible bulk)."""
    label = [KeyValue(key="padding", value=AnyValue(string_value="x" * padding))] if padding else []
    if signal == "traces":
        message = ExportTraceServiceRequest()
        spans = message.resource_spans.add().scope_spans.add().spans
        for i in range(items):
            spans.add(trace_id=bytes(15) + bytes((i + 1,)), span_id=bytes(7) + bytes((i + 1,)), name="op%d" % i,
                      kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=1000 + i, end_time_unix_nano=2000 + i,
                      attributes=label)
        return message
    if signal == "metrics":
        message = ExportMetricsServiceRequest()
        metric = message.resource_metrics.add().scope_metrics.add().metrics.add(name="calls")
        metric.sum.is_monotonic = True
        for i in range(items):
            metric.sum.data_points.append(NumberDataPoint(as_int=i, time_unix_nano=1000 + i, attributes=label))
        return message
    message = ExportLogsServiceRequest()
    records = message.resource_logs.add().scope_logs.add().log_records
    for i in range(items):
        records.append(LogRecord(time_unix_nano=1000 + i, body=AnyValue(string_value="hit %d" % i),
                                 attributes=[KeyValue(key="event.name", value=AnyValue(string_value="file_transfer"))]
                                 + label))
    return message
