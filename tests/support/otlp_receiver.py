"""Real OTLP receivers for the tests: gRPC and HTTP/protobuf, on opentelemetry-proto.

They decode what the tracer sends with the official protobuf definitions and
keep every span with its resource and scope, so tests check the wire format
a collector would see, not the tracer's own objects. Also used by
bench/bench_tracer.py (counting only, to keep up with high rates).

Every request that arrives, for any signal, accepted or not, is noted as an
Arrival (path, headers, encoding, client certificate); ``Collector.script``
makes the next requests fail, answer late or reject items, as a collector can.
Both take TLS (``tls=``: an ssl context / gRPC server credentials).
"""

from __future__ import annotations

import collections
import gzip
import threading
import time
import zlib
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Deque, Dict, List, Optional

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

#: signal -> (request, response) message types; the OTLP/HTTP default paths are /v1/<signal>.
MESSAGES = {
    "traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse),
    "metrics": (metrics_service_pb2.ExportMetricsServiceRequest, metrics_service_pb2.ExportMetricsServiceResponse),
    "logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse),
}


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
    scope_version: str = ""
    schema_url: str = ""         # the ScopeSpans' schema_url

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


@dataclass
class Reply:
    """A scripted answer: fail with ``status`` (a grpc.StatusCode or an HTTP status; None: accept),
    asking for ``retry_after`` seconds (gRPC RetryInfo, HTTP Retry-After); or accept with
    ``rejected`` items refused (partial success). ``delay``: answer this many seconds late."""

    status: object = None
    message: str = "told to fail"
    retry_after: Optional[float] = None
    rejected: int = 0
    delay: float = 0.0

    def response(self, signal: str, rejected_message: str = "rejected by the script"):
        response = MESSAGES[signal][1]()
        if self.rejected:
            partial = response.partial_success
            (field,) = [f.name for f in partial.DESCRIPTOR.fields if f.name.startswith("rejected_")]
            setattr(partial, field, self.rejected)
            partial.error_message = rejected_message
        return response

    def status_details(self) -> bytes:
        """A google.rpc.Status with a RetryInfo, as gRPC servers send it (grpc-status-details-bin)."""
        info = error_details_pb2.RetryInfo()
        info.retry_delay.FromNanoseconds(int(self.retry_after * 1e9))
        detail = any_pb2.Any()
        detail.Pack(info)
        return status_pb2.Status(code=self.status.value[0], message=self.message, details=[detail]).SerializeToString()


@dataclass
class Arrival:
    """One request as it arrived, before it was answered."""

    signal: Optional[str]        # None: an HTTP path no signal is served at
    path: str                    # HTTP request target, or the gRPC method
    headers: Dict[str, str]      # HTTP headers / gRPC metadata, keys lower-case
    encoding: str                # HTTP Content-Encoding ("" for gRPC: grpcio does not show it)
    client: str                  # the client's address (HTTP: "ip:port", one per connection)
    peer_name: str               # the client certificate's common name under mutual TLS, else ""
    request: object = None       # the decoded Export*ServiceRequest


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
        #: Replies for the next requests, one each, before fail_with.
        self.script: Deque[Reply] = collections.deque()
        self.arrivals: List[Arrival] = []

    def arrived(self, arrival: Arrival) -> Reply:
        """Note a request (every one, accepted or not; not kept with count_only); how to answer it."""
        with self.cond:
            if not self.count_only:
                self.arrivals.append(arrival)
            reply = self.script.popleft() if self.script else Reply(status=self.fail_with)
            self.cond.notify_all()
        if reply.delay:
            time.sleep(reply.delay)
        return reply

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest, headers: Dict[str, str]) -> None:
        batch = []
        n = 0
        for rs in request.resource_spans:
            res = None if self.count_only else attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                n += len(ss.spans)
                if not self.count_only:
                    batch.extend(ReceivedSpan(s, res, ss.scope.name, ss.scope.version, ss.schema_url)
                                 for s in ss.spans)
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


class _Servicer:
    """Export for the three services (registered with each official add_*Servicer_to_server)."""

    def __init__(self, collector: Collector):
        self.collector = collector

    def Export(self, request, context):
        signal = next(name for name, (kind, _) in MESSAGES.items() if isinstance(request, kind))
        (service,) = type(request).DESCRIPTOR.file.services_by_name.values()
        headers = dict(context.invocation_metadata())
        peer_name = context.auth_context().get("x509_common_name", [b""])[0].decode()
        reply = self.collector.arrived(Arrival(signal, "/%s/Export" % service.full_name, headers, "", context.peer(),
                                               peer_name, request))
        if reply.status is not None:
            if reply.retry_after is not None:
                context.set_trailing_metadata((("grpc-status-details-bin", reply.status_details()),))
            context.abort(reply.status, reply.message)
        if signal == "traces":
            self.collector.add(request, headers)
        return reply.response(signal)


class GrpcReceiver:
    """OTLP/gRPC, traces, metrics and logs, on 127.0.0.1 (an ephemeral port unless given); ``tls``: server credentials."""

    def __init__(self, collector: Optional[Collector] = None, port: int = 0, workers: int = 4,
                 tls: Optional[grpc.ServerCredentials] = None):
        self.collector = collector or Collector()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                                  options=[("grpc.max_receive_message_length", 64 << 20)])
        servicer = _Servicer(self.collector)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(servicer, self.server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(servicer, self.server)
        address = "127.0.0.1:%d" % port
        self.port = self.server.add_secure_port(address, tls) if tls else self.server.add_insecure_port(address)
        self.scheme = "https" if tls else "http"
        self.server.start()

    @property
    def endpoint(self) -> str:
        return "%s://127.0.0.1:%d" % (self.scheme, self.port)

    def stop(self, grace: float = 0) -> None:
        """Stop serving; with ``grace``, requests already taken are answered first (up to that long)."""
        self.server.stop(grace).wait()


class HttpReceiver:
    """OTLP/HTTP (binary protobuf, HTTP/1.1 keep-alive) at http://127.0.0.1:PORT/v1/{traces,metrics,logs}.

    ``paths`` maps other request paths to the signal served there; ``tls``: a server-side
    ssl context (https).
    """

    def __init__(self, collector: Optional[Collector] = None, paths: Optional[Dict[str, str]] = None,
                 tls=None):
        self.collector = collector or Collector()
        collector = self.collector
        served = dict(paths or {}, **{"/v1/" + signal: signal for signal in MESSAGES})

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, status: int, body: bytes = b"", headers: Dict[str, str] = {}):
                try:
                    self.send_response(status)
                    for key, value in dict(headers, **{"Content-Length": str(len(body))}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # a client that gave up waiting (timeouts)
                    self.close_connection = True

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                signal = served.get(self.path)
                encoding = self.headers.get("Content-Encoding", "")
                request = None
                if signal is not None:
                    if encoding == "gzip":
                        body = gzip.decompress(body)
                    elif encoding == "deflate":
                        body = zlib.decompress(body)
                    request = MESSAGES[signal][0].FromString(body)
                peer = self.connection.getpeercert() if tls else None
                peer_name = dict(x[0] for x in peer["subject"]).get("commonName", "") if peer else ""
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = collector.arrived(Arrival(signal, self.path, headers, encoding,
                                                  "%s:%d" % self.client_address, peer_name, request))
                protobuf = {"Content-Type": "application/x-protobuf"}
                if signal is None:
                    self.answer(404)
                elif reply.status is not None:
                    error = status_pb2.Status(message=reply.message).SerializeToString()
                    if reply.retry_after is not None:
                        protobuf["Retry-After"] = "%d" % reply.retry_after
                    self.answer(int(reply.status), error, protobuf)
                else:
                    if signal == "traces":
                        collector.add(request, headers)
                    self.answer(200, reply.response(signal).SerializeToString(), protobuf)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.scheme = "https" if tls else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return "%s://127.0.0.1:%d" % (self.scheme, self.port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
