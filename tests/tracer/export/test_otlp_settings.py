"""OTLP settings as the OpenTelemetry specification defines them: flags, OTEL_EXPORTER_OTLP_*, precedence, errors.

What each setting does at a real receiver is in test_otlp_client.py; here, how
the values are read. The endpoint cases are the specification's own examples
("Endpoint URLs for OTLP/HTTP").
"""

from __future__ import annotations

import pytest

from spanprobe_tracer.errors import TracerError
from spanprobe_tracer.export.otlp.settings import Flags, resolve

HTTP = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}


def test_defaults():
    s = resolve("traces", env={})
    assert (s.protocol, s.grpc_target, s.secure) == ("grpc", "localhost:4317", False)
    assert (s.timeout, s.compression, s.headers) == (10.0, "none", ())
    assert s.describe() == "OTLP/grpc traces to localhost:4317 (plaintext)"
    for signal in ("traces", "metrics", "logs"):
        h = resolve(signal, env=HTTP)
        assert h.endpoint == "http://localhost:4318/v1/" + signal
        assert (h.host, h.port, h.path, h.secure) == ("localhost", 4318, "/v1/" + signal, False)


@pytest.mark.parametrize("generic, specific, expected", [
    # Example 1: one base for every signal.
    ("http://collector:4318", None, {s: "http://collector:4318/v1/" + s for s in ("traces", "metrics", "logs")}),
    # Example 2: a signal-specific URL is used as is, "/" when it has no path; default ports.
    (None, {"TRACES": "http://collector:4318", "METRICS": "https://collector.example.com/v1/metrics"},
     {"traces": "http://collector:4318/", "metrics": "https://collector.example.com/v1/metrics"}),
    # Example 3: a base with a path; a specific one with a trailing slash stays as it is.
    ("http://collector:4318/mycollector/", {"METRICS": "https://collector.example.com/v1/metrics/"},
     {"traces": "http://collector:4318/mycollector/v1/traces", "logs": "http://collector:4318/mycollector/v1/logs",
      "metrics": "https://collector.example.com/v1/metrics/"}),
    # A base path without the trailing slash gets one before v1/<signal>.
    ("https://gw.example/otlp", None, {"traces": "https://gw.example/otlp/v1/traces"}),
])
def test_http_endpoint_urls_follow_the_specification(generic, specific, expected):
    env = dict(HTTP)
    if generic:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = generic
    for signal, url in (specific or {}).items():
        env["OTEL_EXPORTER_OTLP_%s_ENDPOINT" % signal] = url
    for signal, url in expected.items():
        s = resolve(signal, env=env)
        assert s.endpoint == url
        assert s.port == (443 if url.startswith("https") else 4318 if ":4318" in url else 80)


def test_http_endpoint_flag_is_a_base_unless_it_has_a_path():
    assert resolve("traces", Flags(endpoint="http://c:9"), HTTP).path == "/v1/traces"
    assert resolve("logs", Flags(endpoint="http://c:9/"), HTTP).path == "/v1/logs"
    assert resolve("traces", Flags(endpoint="http://c:9/x/y?k=v"), HTTP).path == "/x/y?k=v"


@pytest.mark.parametrize("signal", ["traces", "metrics", "logs"])
def test_http_endpoint_flag_with_a_signal_path_gives_each_signal_its_own(signal):
    """`--otlp-endpoint http://c:4318/v1/traces` (the URL one copies for traces) must not send span
    metrics and events to the traces path, where a collector refuses them."""
    for given in ("http://c:9/v1/traces", "http://c:9/v1/logs", "http://c:9/v1/metrics"):
        assert resolve(signal, Flags(endpoint=given), HTTP).path == "/v1/" + signal
    assert resolve(signal, Flags(endpoint="http://c:9/gw/v1/traces"), HTTP).path == "/gw/v1/" + signal


@pytest.mark.parametrize("endpoint, insecure, target, secure", [
    ("http://c:4317", None, "c:4317", False),
    ("https://c:4317", None, "c:4317", True),
    ("http://c:4317", "false", "c:4317", False),     # the scheme wins over INSECURE
    ("https://c:4317", "true", "c:4317", True),
    ("c:4317", None, "c:4317", True),                # no scheme: INSECURE decides, TLS by default
    ("c:4317", "TRUE", "c:4317", False),
    ("c:4317", "false", "c:4317", True),
    ("http://[::1]:4317/", None, "[::1]:4317", False),
    ("https://c", None, "c:443", True),
    ("unix:/run/otel.sock", "true", "unix:/run/otel.sock", False),
])
def test_grpc_endpoint_and_transport_security(endpoint, insecure, target, secure):
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    if insecure is not None:
        env["OTEL_EXPORTER_OTLP_INSECURE"] = insecure
    s = resolve("traces", env=env)
    assert (s.grpc_target, s.secure) == (target, secure)


OPTIONS = {  # option: (generic value, signal value, flag value, what each resolves to)
    "ENDPOINT": ("http://g:1", "http://s:2", "http://f:3", lambda s: s.host),
    "PROTOCOL": ("http/protobuf", "grpc", "http/protobuf", lambda s: s.protocol),
    "HEADERS": ("k=g", "k=s", [("k", "f")], lambda s: dict(s.headers)["k"]),
    "TIMEOUT": ("1000", "2000", 3.0, lambda s: s.timeout),
    "COMPRESSION": ("gzip", "none", "gzip", lambda s: s.compression),
    "INSECURE": ("true", "false", True, lambda s: s.secure),
}
RESOLVED = {"ENDPOINT": ("g", "s", "f"), "PROTOCOL": ("http/protobuf", "grpc", "http/protobuf"),
            "HEADERS": ("g", "s", "f"), "TIMEOUT": (1.0, 2.0, 3.0), "COMPRESSION": ("gzip", "none", "gzip"),
            "INSECURE": (False, True, False)}


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("signal", ["traces", "metrics", "logs"])
def test_flag_over_signal_variable_over_generic_variable(option, signal):
    generic, specific, flag, read = OPTIONS[option]
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "g:1"} if option == "INSECURE" else {}
    env["OTEL_EXPORTER_OTLP_" + option] = generic
    assert read(resolve(signal, env=env)) == RESOLVED[option][0]
    # Another signal's variable is not this signal's.
    other = next(s for s in ("traces", "metrics", "logs") if s != signal)
    assert read(resolve(signal, env=dict(env, **{"OTEL_EXPORTER_OTLP_%s_%s" % (other.upper(), option): specific}))) \
        == RESOLVED[option][0]
    env["OTEL_EXPORTER_OTLP_%s_%s" % (signal.upper(), option)] = specific
    assert read(resolve(signal, env=env)) == RESOLVED[option][1]
    field = {"HEADERS": "headers"}.get(option, option.lower())
    assert read(resolve(signal, Flags(**{field: flag}), env)) == RESOLVED[option][2]


def test_certificate_files_flag_over_signal_over_generic(tmp_path):
    files = {}
    for name in ("g", "s", "f"):
        files[name] = tmp_path / name
        files[name].write_text("x")
    for option, field in (("CERTIFICATE", "certificate"), ("CLIENT_KEY", "client_key"),
                          ("CLIENT_CERTIFICATE", "client_certificate")):
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:1"}
        for other in ("CLIENT_KEY", "CLIENT_CERTIFICATE"):  # a key needs its certificate and back
            env["OTEL_EXPORTER_OTLP_" + other] = str(files["g"])
        env["OTEL_EXPORTER_OTLP_" + option] = str(files["g"])
        assert getattr(resolve("logs", env=env), field) == str(files["g"])
        env["OTEL_EXPORTER_OTLP_LOGS_" + option] = str(files["s"])
        assert getattr(resolve("logs", env=env), field) == str(files["s"])
        assert getattr(resolve("logs", Flags(**{field: str(files["f"])}), env), field) == str(files["f"])


def test_empty_variables_count_as_unset():
    env = {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
           "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": " ", "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
           "OTEL_EXPORTER_OTLP_TRACES_HEADERS": ""}
    s = resolve("traces", env=env)
    assert (s.protocol, s.timeout, s.headers) == ("http/protobuf", 2.5, ())


def test_headers_are_percent_decoded_key_value_lists():
    env = {"OTEL_EXPORTER_OTLP_HEADERS": " Api-Key = a%20b%2Cc ,x-empty=, ,x-eq=a=b=,x-utf8=%C3%A9 "}
    assert dict(resolve("traces", env=env).headers) == {"api-key": "a b,c", "x-empty": "", "x-eq": "a=b=",
                                                        "x-utf8": "é"}


def test_signal_headers_replace_generic_ones_and_flags_override_key_by_key():
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=2", "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "b=3,c=4"}
    assert dict(resolve("metrics", env=env).headers) == {"b": "3", "c": "4"}
    assert dict(resolve("traces", env=env).headers) == {"a": "1", "b": "2"}
    flags = Flags(headers=[("B", "flag"), ("d", "5")])
    assert dict(resolve("traces", flags, env).headers) == {"a": "1", "b": "flag", "d": "5"}


def test_timeout_is_milliseconds_and_zero_means_no_limit():
    assert resolve("traces", env={"OTEL_EXPORTER_OTLP_TIMEOUT": "12000"}).timeout == 12.0
    assert resolve("traces", env={"OTEL_EXPORTER_OTLP_TIMEOUT": "0"}).timeout is None
    assert resolve("traces", Flags(timeout=0.0), {}).timeout is None
    assert resolve("traces", Flags(timeout=2.5), {"OTEL_EXPORTER_OTLP_TIMEOUT": "1"}).timeout == 2.5


def test_a_timeout_under_a_second_is_logged_as_a_likely_unit_mistake(caplog):
    assert resolve("traces", env={"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "10"}).timeout == 0.01
    assert "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT is 10 milliseconds" in caplog.text


@pytest.mark.parametrize("env, flags, match", [
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, Flags(), "OTEL_EXPORTER_OTLP_PROTOCOL='http/json': http/json is not"),
    ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grcp"}, Flags(), "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='grcp' is not an"),
    ({}, Flags(protocol="thrift"), "--otlp-protocol 'thrift' is not an OTLP protocol"),
    ({"OTEL_EXPORTER_OTLP_TIMEOUT": "10s"}, Flags(), "OTEL_EXPORTER_OTLP_TIMEOUT='10s' is not a whole number of "
                                                     "milliseconds"),
    ({"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "-5"}, Flags(), "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT='-5' is not"),
    ({"OTEL_EXPORTER_OTLP_TIMEOUT": "2.5"}, Flags(), "OTEL_EXPORTER_OTLP_TIMEOUT='2.5' is not"),
    ({}, Flags(timeout=-1.0), "--otlp-timeout -1.0: expected a number of seconds"),
    ({"OTEL_EXPORTER_OTLP_COMPRESSION": "br"}, Flags(), "OTEL_EXPORTER_OTLP_COMPRESSION='br' is not supported "
                                                        "over grpc; use gzip or none"),
    ({"OTEL_EXPORTER_OTLP_COMPRESSION": "deflate"}, Flags(), "'deflate' is not supported over grpc"),
    ({"OTEL_EXPORTER_OTLP_INSECURE": "yes"}, Flags(), "OTEL_EXPORTER_OTLP_INSECURE='yes': expected true or false"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://c:1"}, Flags(), "OTEL_EXPORTER_OTLP_ENDPOINT='ftp://c:1': the scheme"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:99999"}, Flags(), "has an invalid port"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317/v1/traces"}, Flags(), "an OTLP/gRPC endpoint has no path"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://u:secret@c:4317"}, Flags(), "credentials in the URL are not sent"),
    (dict(HTTP, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="collector:4318"), Flags(), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="
                                                                             "'collector:4318' is not an http"),
    ({"OTEL_EXPORTER_OTLP_HEADERS": "a=1,Authorization Bearer s3cr3t-t0ken"}, Flags(),
     r"OTEL_EXPORTER_OTLP_HEADERS: item 2, 'Authoriz…' \(33 characters\), is not key=value"),
    ({"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "bad key=1"}, Flags(), "'bad key' is not a valid header name"),
    ({"OTEL_EXPORTER_OTLP_HEADERS": "x=%0d%0aInjected: 1"}, Flags(), "the value of 'x' has control characters"),
    ({"OTEL_EXPORTER_OTLP_HEADERS": "x=%ff"}, Flags(), "the value of 'x' is not percent-encoded UTF-8"),
    ({}, Flags(headers=[("x", "a\nb")]), "--otlp-header: the value of 'x' has control characters"),
])
def test_unusable_values_are_errors_naming_the_variable_or_flag(env, flags, match):
    with pytest.raises(TracerError, match=match):
        resolve("traces", flags, env)


def test_header_errors_do_not_show_a_secret_value():
    with pytest.raises(TracerError) as info:
        resolve("traces", env={"OTEL_EXPORTER_OTLP_HEADERS": "Authorization Bearer s3cr3t-t0ken"})
    assert "s3cr3t" not in str(info.value)


def test_certificate_files_must_be_readable_when_tls_is_used(tmp_path):
    missing = str(tmp_path / "nowhere.pem")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4317", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": missing}
    with pytest.raises(TracerError, match="OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE='%s': cannot read it: No such file"
                                          % missing):
        resolve("traces", env=env)
    with pytest.raises(TracerError, match="--otlp-client-key '%s': cannot read it" % missing):
        resolve("traces", Flags(client_key=missing), {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4317"})
    # Plaintext: certificates do not apply, so they are not read.
    assert resolve("traces", env=dict(env, OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4317")).certificate is None


def test_mutual_tls_needs_both_the_client_key_and_certificate(tmp_path):
    key = tmp_path / "client.key"
    key.write_text("x")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4317", "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(key)}
    with pytest.raises(TracerError, match="OTEL_EXPORTER_OTLP_CLIENT_KEY is given but no client certificate "
                                          r"\(--otlp-client-certificate or OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERT"):
        resolve("traces", env=env)


def test_values_are_read_case_insensitively_where_the_specification_says_enum():
    s = resolve("traces", env={"OTEL_EXPORTER_OTLP_PROTOCOL": " HTTP/Protobuf ", "OTEL_EXPORTER_OTLP_COMPRESSION": "GZip"})
    assert (s.protocol, s.compression) == ("http/protobuf", "gzip")
