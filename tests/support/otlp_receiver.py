"""Real OTLP receivers for the tests: gRPC and HTTP/protobuf, on opentelemetry-proto.

They decode what the tracer sends with the official protobuf definitions and
keep every span with its resource and scope, so tests check the wire format
a collector would see, not the tracer's own objects. Also used by
bench/bench_tracer.py (counting only, to keep up with high rates).
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def any_value(v: AnyValue):
    which = v.WhichOneof("value")
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


def attributes(kvs) -> Dict[str, object]:
    return {kv.key: any_value(kv.value) for kv in kvs}


@dataclass
class ReceivedSpan:
    span: object                 # opentelemetry.proto.trace.v1.trace_pb2.Span
    resource: Dict[str, object]
    scope: str

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> Dict[str, object]:
        return attributes(self.span.attributes)

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_span_id(self) -> str:
        return self.span.parent_span_id.hex()


class Collector:
    """What the receivers got, thread-safe. ``count_only`` skips keeping spans (benchmarks)."""

    def __init__(self, count_only: bool = False):
        self.count_only = count_only
        self.spans: List[ReceivedSpan] = []
        self.count = 0
        self.requests = 0
        self.headers: List[Dict[str, str]] = []
        self.cond = threading.Condition()
        #: Set to a grpc.StatusCode / HTTP status to make the receiver fail requests.
        self.fail_with = None

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest, headers: Dict[str, str]) -> None:
        batch = []
        n = 0
        for rs in request.resource_spans:
            res = None if self.count_only else attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                n += len(ss.spans)
                if not self.count_only:
                    batch.extend(ReceivedSpan(s, res, ss.scope.name) for s in ss.spans)
        with self.cond:
            self.requests += 1
            self.count += n
            self.spans.extend(batch)
            if not self.count_only:
                self.headers.append(headers)
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[["Collector"], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)
        return True

    def by_name(self, name: str) -> List[ReceivedSpan]:
        with self.cond:
            return [s for s in self.spans if s.name == name]


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collector: Collector):
        self.collector = collector

    def Export(self, request, context):
        if self.collector.fail_with is not None:
            context.abort(self.collector.fail_with, "told to fail")
        self.collector.add(request, dict(context.invocation_metadata()))
        return trace_service_pb2.ExportTraceServiceResponse()


class GrpcReceiver:
    """OTLP/gRPC on 127.0.0.1 (an ephemeral port unless given)."""

    def __init__(self, collector: Optional[Collector] = None, port: int = 0, workers: int = 4):
        self.collector = collector or Collector()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                                  options=[("grpc.max_receive_message_length", 64 << 20)])
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Servicer(self.collector), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:%d" % port)
        self.server.start()

    @property
    def endpoint(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def stop(self, grace: float = 0) -> None:
        """Stop serving; with ``grace``, requests already taken are answered first (up to that long)."""
        self.server.stop(grace).wait()


class HttpReceiver:
    """OTLP/HTTP (binary protobuf) at http://127.0.0.1:PORT/v1/traces."""

    def __init__(self, collector: Optional[Collector] = None):
        self.collector = collector or Collector()
        collector = self.collector

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                if collector.fail_with is not None:
                    self.send_response(int(collector.fail_with))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.add(request, {k.lower(): v for k, v in self.headers.items()})
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
