"""Every OTLP flag and OTEL_EXPORTER_OTLP_* variable has its effect at a real receiver.

Endpoints and paths, protocol, headers, compression (over gRPC: bytes on the
wire, through a counting relay), the timeout's unit, and TLS: a CA and
certificates made here with openssl, server verification with CERTIFICATE,
mutual TLS with CLIENT_KEY / CLIENT_CERTIFICATE, INSECURE. Precedence
(flag over signal variable over generic variable) is shown by pointing the
losing setting at a port nothing listens on.
"""

from __future__ import annotations

import socket
import threading

import pytest

from spanprobe_tracer.errors import TracerError
from spanprobe_tracer.export.otlp.client import make_client
from spanprobe_tracer.export.otlp.delivery import Backoff
from spanprobe_tracer.export.otlp.settings import Flags, resolve
from tests.support.otlp_receiver import GrpcReceiver, HttpReceiver, Reply
from tests.support.otlp_requests import request
from tests.support.otlp_tls import CLIENT_NAME, make_pki

PROTOCOLS = ["grpc", "http/protobuf"]
FAST = Backoff(initial=0.05, maximum=0.2)


def dead_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "http://127.0.0.1:%d" % s.getsockname()[1]


def export(signal="traces", flags=Flags(), env=None, items=2, padding=0):
    client = make_client(resolve(signal, flags, env or {}), FAST)
    try:
        return client.export(request(signal, items, padding).SerializeToString(), items)
    finally:
        client.shutdown()


def make_receiver(protocol, **kw):
    return GrpcReceiver(**kw) if protocol == "grpc" else HttpReceiver(**kw)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def receivers():
    made = []

    def make(protocol, **kw):
        made.append(make_receiver(protocol, **kw))
        return made[-1]

    yield make
    for r in made:
        r.stop()


# --- endpoint, protocol -------------------------------------------------------------------

def test_http_generic_endpoint_is_a_base_for_every_signal(receivers):
    r = receivers("http/protobuf", paths={"/otlp/v1/" + s: s for s in ("traces", "metrics", "logs")})
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": r.endpoint + "/otlp/"}
    for signal in ("traces", "metrics", "logs"):
        assert export(signal, env=env).ok
    assert [(a.path, a.signal) for a in r.collector.arrivals] == [
        ("/otlp/v1/traces", "traces"), ("/otlp/v1/metrics", "metrics"), ("/otlp/v1/logs", "logs")]


def test_http_signal_endpoint_is_used_as_is_and_wins_over_the_generic_one(receivers):
    r = receivers("http/protobuf", paths={"/custom/spans": "traces"})
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": dead_endpoint(),
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": r.endpoint + "/custom/spans"}
    assert export("traces", env=env).ok
    assert [a.path for a in r.collector.arrivals] == ["/custom/spans"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_endpoint_flag_wins_over_the_variables(receivers, protocol):
    r = receivers(protocol)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": dead_endpoint(), "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": dead_endpoint()}
    assert export("logs", Flags(endpoint=r.endpoint, protocol=protocol), env).ok
    assert [a.signal for a in r.collector.arrivals] == ["logs"]


def test_grpc_signal_endpoint_wins_over_the_generic_one(receivers):
    r = receivers("grpc")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": dead_endpoint(), "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": r.endpoint}
    assert export("metrics", env=env).ok
    assert [a.signal for a in r.collector.arrivals] == ["metrics"]


def test_protocol_per_signal_and_by_flag(receivers):
    g, h = receivers("grpc"), receivers("http/protobuf")
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": g.endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT": h.endpoint}
    assert export("traces", env=env).ok and export("logs", env=env).ok
    assert export("traces", Flags(protocol="http/protobuf", endpoint=h.endpoint), env).ok
    assert [a.signal for a in g.collector.arrivals] == ["traces"]
    assert [a.path for a in h.collector.arrivals] == ["/v1/logs", "/v1/traces"]


# --- headers, compression, timeout -----------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_headers_from_variables_and_flags_arrive(receivers, protocol):
    r = receivers(protocol)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": r.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
           "OTEL_EXPORTER_OTLP_HEADERS": "X-Tenant=generic, x-shared=1",
           "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-tenant=traces%2Fteam%20a,api-key=k=v"}
    flags = Flags(headers=[("x-flag", "f"), ("api-key", "from-flag")])
    assert export("traces", flags, env).ok and export("metrics", env=env).ok
    traces, metrics = r.collector.arrivals
    assert {k: traces.headers.get(k) for k in ("x-tenant", "x-shared", "api-key", "x-flag")} == {
        "x-tenant": "traces/team a", "x-shared": None, "api-key": "from-flag", "x-flag": "f"}
    assert {k: metrics.headers.get(k) for k in ("x-tenant", "x-shared", "api-key", "x-flag")} == {
        "x-tenant": "generic", "x-shared": "1", "api-key": None, "x-flag": None}


@pytest.mark.parametrize("compression, encoding", [("gzip", "gzip"), ("deflate", "deflate"), ("none", "")])
def test_http_compression_variable(receivers, compression, encoding):
    r = receivers("http/protobuf")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": r.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
           "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": compression}
    assert export("metrics", env=env, items=5).ok
    (arrival,) = r.collector.arrivals
    assert arrival.encoding == encoding
    assert arrival.request == request("metrics", 5)


class WireCounter:
    """A TCP relay to 127.0.0.1:``port`` counting the bytes clients send through it (what compression shrinks)."""

    def __init__(self, port: int):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = "http://127.0.0.1:%d" % self.listener.getsockname()[1]
        self.sent = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, args=(port,), daemon=True).start()

    def _accept(self, port: int) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if count:
                    with self.lock:
                        self.sent += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def test_grpc_compression_variable_shrinks_the_request_on_the_wire(receivers):
    r = receivers("grpc")
    sent = {}
    for compression in ("none", "gzip"):
        relay = WireCounter(r.port)
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": relay.endpoint, "OTEL_EXPORTER_OTLP_COMPRESSION": compression}
        assert export("logs", env=env, items=10, padding=20000).ok
        relay.close()
        sent[compression] = relay.sent
    assert sent["none"] > 200_000 > 20 * sent["gzip"]
    assert [a.request for a in r.collector.arrivals] == [request("logs", 10, 20000)] * 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_timeout_variable_is_in_milliseconds(receivers, protocol):
    r = receivers(protocol)
    r.collector.script.append(Reply(delay=6.0))
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": r.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
           "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1000"}
    client = make_client(resolve("traces", env=env), FAST)
    out = {}
    thread = threading.Thread(target=lambda: out.update(result=client.export(request("traces", 1).SerializeToString(), 1)))
    thread.start()
    thread.join(3.0)     # 1000 read as seconds would wait out the server's 6 s
    client.shutdown()
    thread.join(5)
    assert not out["result"].ok and out["result"].status in ("DEADLINE_EXCEEDED", "timeout")


# --- TLS ---------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tls_server_verified_with_the_certificate_variable_or_flag(receivers, pki, protocol):
    r = receivers(protocol, tls=pki.grpc_server() if protocol == "grpc" else pki.http_server())
    assert r.endpoint.startswith("https://")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": r.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    assert export("traces", env=dict(env, OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE=str(pki.ca))).ok
    assert export("traces", Flags(certificate=str(pki.ca)), dict(env, OTEL_EXPORTER_OTLP_CERTIFICATE=str(pki.other_ca))).ok
    assert len(r.collector.arrivals) == 2
    # Not trusted: the system's CAs, another CA.
    for untrusted in ({}, {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.other_ca)}):
        result = export("traces", Flags(timeout=1.0), dict(env, **untrusted))
        assert not result.ok   # gRPC: UNAVAILABLE, or DEADLINE_EXCEEDED if the timeout ends a handshake
    assert len(r.collector.arrivals) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mutual_tls_with_the_client_key_and_certificate(receivers, pki, protocol):
    r = receivers(protocol, tls=pki.grpc_server(True) if protocol == "grpc" else pki.http_server(True))
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": r.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
           "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.ca)}
    assert not export("traces", Flags(timeout=1.0), env).ok        # no client certificate: refused
    assert r.collector.arrivals == []
    assert export("traces", env=dict(env, OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY=str(pki.client_key),
                                     OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE=str(pki.client_cert))).ok
    assert export("traces", Flags(client_key=str(pki.client_key), client_certificate=str(pki.client_cert)), env).ok
    assert [a.peer_name for a in r.collector.arrivals] == [CLIENT_NAME] * 2


def test_grpc_insecure_decides_only_without_a_scheme(receivers, pki):
    tls, plain = receivers("grpc", tls=pki.grpc_server()), receivers("grpc")
    ca = {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.ca)}
    assert export("traces", env=dict(ca, OTEL_EXPORTER_OTLP_ENDPOINT="127.0.0.1:%d" % tls.port)).ok
    assert export("traces", env={"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:%d" % plain.port,
                                 "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true"}).ok
    assert export("traces", Flags(insecure=True), {"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:%d" % plain.port}).ok
    # The scheme wins over INSECURE.
    assert export("traces", env={"OTEL_EXPORTER_OTLP_ENDPOINT": plain.endpoint,
                                 "OTEL_EXPORTER_OTLP_INSECURE": "false"}).ok
    assert export("traces", env=dict(ca, OTEL_EXPORTER_OTLP_ENDPOINT=tls.endpoint, OTEL_EXPORTER_OTLP_INSECURE="true")).ok
    assert (len(tls.collector.arrivals), len(plain.collector.arrivals)) == (2, 3)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unusable_tls_files_are_errors_at_start_naming_the_variable(pki, protocol, tmp_path):
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    garbage = tmp_path / "not-a-cert.pem"
    garbage.write_text("hello\n")
    with pytest.raises(TracerError, match="OTEL_EXPORTER_OTLP_CERTIFICATE .*not-a-cert.pem.* is not a PEM certificate"):
        make_client(resolve("traces", env=dict(env, OTEL_EXPORTER_OTLP_CERTIFICATE=str(garbage))))
    with pytest.raises(TracerError, match="--otlp-client-certificate .* and OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY .*server.key"
                                          r"\) are not a matching PEM certificate and key"):
        make_client(resolve("logs", Flags(client_certificate=str(pki.client_cert)),
                            dict(env, OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY=str(pki.server_key))))
