"""spanprobe's OTLP client against real receivers: signals, retries as the OTLP specification says, timeouts,
shutdown, partial success, HTTP keep-alive.

Each test runs over both protocols where both have the behaviour; the
receivers (otlp_receiver.py) decode with the official definitions and play
scripted failures. Times are checked only as bounds a user relies on (an
export never outlives its timeout; shutdown does not wait out a backoff).
"""

from __future__ import annotations

import socket
import threading
import time

import grpc
import pytest

from spanprobe_tracer.errors import EndpointUnreachable
from spanprobe_tracer.export.otlp.client import check_reachable, make_client
from spanprobe_tracer.export.otlp.delivery import Backoff
from spanprobe_tracer.export.otlp.settings import Flags, resolve
from tests.support.otlp_receiver import GrpcReceiver, HttpReceiver, Reply
from tests.support.otlp_requests import request

PROTOCOLS = ["grpc", "http/protobuf"]
#: Short waits, so that a test that waits long shows the server's delay was honoured, not ours.
FAST = Backoff(initial=0.05, maximum=0.2)
TRANSIENT = {"grpc": grpc.StatusCode.UNAVAILABLE, "http/protobuf": 503}
GRPC_PATHS = {"traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
              "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
              "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export"}


@pytest.fixture(params=PROTOCOLS)
def receiver(request):
    r = GrpcReceiver() if request.param == "grpc" else HttpReceiver()
    r.protocol = request.param
    yield r
    r.stop()


def client_for(receiver, signal="traces", backoff=FAST, **flags):
    return make_client(resolve(signal, Flags(endpoint=receiver.endpoint, protocol=receiver.protocol, **flags), {}),
                       backoff)


def send(client, signal="traces", items=3):
    return client.export(request(signal, items).SerializeToString(), items)


@pytest.mark.parametrize("signal", ["traces", "metrics", "logs"])
def test_each_signal_reaches_its_own_service_with_the_bytes_given(receiver, signal):
    client = client_for(receiver, signal)
    sent = request(signal, 4)
    result = client.export(sent.SerializeToString(), 4)
    client.shutdown()
    assert (result.ok, result.delivered, result.rejected, result.attempts) == (True, 4, 0, 1)
    (arrival,) = receiver.collector.arrivals
    assert arrival.signal == signal
    assert arrival.path == ("/v1/" + signal if receiver.protocol != "grpc" else GRPC_PATHS[signal])
    assert arrival.request == sent


def test_transient_failures_are_retried_and_delivered_once(receiver):
    receiver.collector.script.extend([Reply(TRANSIENT[receiver.protocol])] * 2)
    client = client_for(receiver)
    result = send(client)
    client.shutdown()
    assert (result.ok, result.attempts) == (True, 3)
    assert len(receiver.collector.arrivals) == 3
    assert receiver.collector.count == 3          # the spans, once


def test_the_servers_retry_delay_is_honoured(receiver):
    """gRPC RetryInfo / HTTP Retry-After: 1 s, where our own backoff would wait 0.05 s."""
    status = {"grpc": grpc.StatusCode.UNAVAILABLE, "http/protobuf": 429}[receiver.protocol]
    receiver.collector.script.append(Reply(status, retry_after=1.0))
    client = client_for(receiver)
    t = time.monotonic()
    result = send(client)
    elapsed = time.monotonic() - t
    client.shutdown()
    assert (result.ok, result.attempts) == (True, 2)
    assert elapsed >= 0.95


def test_resource_exhausted_is_retried_only_when_the_server_says_when():
    receiver = GrpcReceiver()
    try:
        receiver.collector.script.append(Reply(grpc.StatusCode.RESOURCE_EXHAUSTED, "too big"))
        client = make_client(resolve("traces", Flags(endpoint=receiver.endpoint), {}), FAST)
        result = send(client)
        assert (result.ok, result.status, result.message, result.attempts) == (
            False, "RESOURCE_EXHAUSTED", "too big", 1)
        assert len(receiver.collector.arrivals) == 1
        receiver.collector.script.append(Reply(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", retry_after=0.1))
        result = send(client)
        assert (result.ok, result.attempts) == (True, 2)
        client.shutdown()
    finally:
        receiver.stop()


@pytest.mark.parametrize("protocol, status, name", [
    ("grpc", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ("grpc", grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
    ("grpc", grpc.StatusCode.INTERNAL, "INTERNAL"),
    ("http/protobuf", 400, "HTTP 400"),
    ("http/protobuf", 401, "HTTP 401"),
    ("http/protobuf", 413, "HTTP 413"),
    ("http/protobuf", 500, "HTTP 500"),
])
def test_other_failures_are_reported_at_once_with_status_and_message(protocol, status, name):
    receiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    receiver.protocol = protocol
    try:
        receiver.collector.script.append(Reply(status, "bad data in span 7"))
        client = client_for(receiver)
        result = send(client)
        client.shutdown()
        assert (result.ok, result.status, result.message, result.attempts) == (False, name, "bad data in span 7", 1)
        assert len(receiver.collector.arrivals) == 1
        assert receiver.collector.count == 0
    finally:
        receiver.stop()


def export_in_thread(client):
    out = {}
    thread = threading.Thread(target=lambda: out.update(result=send(client)))
    thread.start()
    return thread, out


def timed_export(client, bound: float):
    """(result, seconds) of one export, which must end within ``bound`` seconds (else the test fails, not hangs)."""
    t = time.monotonic()
    thread, out = export_in_thread(client)
    thread.join(bound)
    elapsed = time.monotonic() - t
    client.shutdown()
    thread.join(5)
    assert elapsed < bound, "the export outlived its timeout"
    return out["result"], elapsed


def test_the_timeout_bounds_a_server_that_does_not_answer(receiver):
    receiver.collector.script.append(Reply(delay=8.0))
    result, _ = timed_export(client_for(receiver, timeout=1.0), bound=3.0)
    assert not result.ok and result.status in ("DEADLINE_EXCEEDED", "timeout")


def test_the_timeout_bounds_the_retries(receiver):
    """Retries with the default backoff (about 1 s, 2 s, 4 s) stop before the 2.5 s timeout is over."""
    receiver.collector.fail_with = TRANSIENT[receiver.protocol]
    result, _ = timed_export(client_for(receiver, backoff=Backoff(), timeout=2.5), bound=2.5 + 0.5)
    assert not result.ok and result.attempts >= 2
    assert "timeout" in result.message


def test_connection_refused_is_retried_within_the_timeout(receiver):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = resolve("traces", Flags(endpoint="http://127.0.0.1:%d" % port, protocol=receiver.protocol,
                                       timeout=1.0), {})
    client = make_client(settings, FAST)
    result = send(client)
    client.shutdown()
    assert not result.ok and result.attempts >= 2
    # gRPC: DEADLINE_EXCEEDED too if the timeout ends while it connects.
    assert result.status in {"grpc": ("UNAVAILABLE", "DEADLINE_EXCEEDED"), "http/protobuf": ("connection",)}[
        receiver.protocol]


def test_shutdown_ends_a_backoff_at_once(receiver):
    receiver.collector.script.append(Reply(TRANSIENT[receiver.protocol], retry_after=60))
    client = client_for(receiver, timeout=120.0)
    thread, out = export_in_thread(client)
    assert receiver.collector.wait_for(lambda c: len(c.arrivals) == 1, timeout=10)
    time.sleep(0.2)  # into the backoff
    t = time.monotonic()
    client.shutdown()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - t < 2.0
    assert not out["result"].ok and "shut down" in out["result"].message
    later = send(client)
    assert (later.ok, later.status, later.attempts) == (False, "shutdown", 0)
    assert len(receiver.collector.arrivals) == 1


def test_shutdown_breaks_off_a_request_in_flight(receiver):
    receiver.collector.script.append(Reply(delay=6.0))
    client = client_for(receiver, timeout=60.0)
    thread, out = export_in_thread(client)
    assert receiver.collector.wait_for(lambda c: len(c.arrivals) == 1, timeout=10)
    t = time.monotonic()
    client.shutdown()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - t < 2.0
    assert not out["result"].ok


@pytest.mark.parametrize("signal", ["traces", "metrics", "logs"])
def test_partial_success_is_reported_and_not_retried(receiver, signal):
    receiver.collector.script.append(Reply(rejected=2))
    client = client_for(receiver, signal)
    result = send(client, signal, items=5)
    client.shutdown()
    assert (result.ok, result.rejected, result.delivered, result.message) == (True, 2, 3, "rejected by the script")
    assert "2 of 5 rejected by the server: rejected by the script" in str(result)
    assert len(receiver.collector.arrivals) == 1


def test_http_keeps_the_connection_alive():
    receiver = HttpReceiver()
    receiver.protocol = "http/protobuf"
    try:
        client = client_for(receiver)
        assert send(client).ok and send(client).ok
        client.shutdown()
        first, second = receiver.collector.arrivals
        assert first.client == second.client
    finally:
        receiver.stop()


def test_http_reopens_a_kept_alive_connection_the_server_closed():
    """A server that closes each connection after one answer, without saying so: the second export
    finds its connection dead, opens a new one and sends once more, within the same attempt."""
    listener = socket.create_server(("127.0.0.1", 0))
    requests = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")][0])
                while len(body) < length:
                    body += conn.recv(65536)
                requests.append(body)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    try:
        client = make_client(resolve("traces", Flags(endpoint="http://127.0.0.1:%d" % listener.getsockname()[1],
                                                     protocol="http/protobuf"), {}), FAST)
        first = send(client)
        time.sleep(0.2)  # the server has closed its end by now
        second = send(client)
        client.shutdown()
    finally:
        listener.close()
    assert (first.ok, second.ok, second.attempts) == (True, True, 1)
    assert len(requests) == 2


def test_check_reachable(receiver):
    check_reachable(resolve("traces", Flags(endpoint=receiver.endpoint, protocol=receiver.protocol), {}))
    endpoint = receiver.endpoint
    receiver.stop()
    settings = resolve("traces", env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                                      "OTEL_EXPORTER_OTLP_PROTOCOL": receiver.protocol})
    with pytest.raises(EndpointUnreachable, match="cannot reach the OTLP endpoint .* from OTEL_EXPORTER_OTLP_ENDPOINT"):
        check_reachable(settings)
