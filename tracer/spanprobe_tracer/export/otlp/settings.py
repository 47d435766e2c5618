"""OTLP settings for one signal, from command-line flags and the standard environment.

Each option comes from, in this order: the flag, ``OTEL_EXPORTER_OTLP_<SIGNAL>_<OPTION>``,
``OTEL_EXPORTER_OTLP_<OPTION>``, the default; an empty variable counts as unset. Options:
ENDPOINT, PROTOCOL, HEADERS, TIMEOUT, COMPRESSION, INSECURE, CERTIFICATE, CLIENT_KEY,
CLIENT_CERTIFICATE. The rules are the OpenTelemetry specification's (Protocol Exporter,
SDK environment variables). Where the official Python exporters (opentelemetry-exporter-
otlp-proto-grpc / -http 1.45) do otherwise, we follow the specification:

* TIMEOUT is a whole number of milliseconds, 0 meaning no limit (spec type Timeout). The
  official exporters read float seconds, so "10" is ten seconds there and ten
  milliseconds here; a value under a second is logged as a likely mistake.
  ``--otlp-timeout`` stays in seconds, like the tracer's other flags.
* OTLP/HTTP: the generic endpoint is a base URL: ``v1/<signal>`` is appended to its path
  (after a ``/``). A signal-specific endpoint is used as is, except that no path means
  ``/`` (the official exporter uses it as is too). A URL without a port means 80 / 443.
* OTLP/gRPC: ``http://`` means plaintext and ``https://`` TLS whatever INSECURE says;
  INSECURE decides only for an endpoint without a scheme (default: TLS). The official
  exporter lets INSECURE=false turn ``http://`` into TLS. A URL path is refused (gRPC
  has none; the official exporter drops it silently). ``unix:PATH`` targets are
  accepted as grpcio takes them; a URL or host without a port means 80 / 443 like a URL.
* Headers: ``key=value`` items separated by commas, values percent-decoded, keys
  lower-cased (gRPC metadata keys must be). The signal-specific variable replaces the
  generic one (as officially); ``--otlp-header`` overrides the environment key by key.
* A value we cannot use is an error naming the flag or variable and the value
  (TracerError), where the specification asks for a warning and the default: a
  mistyped protocol, compression or timeout would otherwise send telemetry somewhere,
  or in some way, the user did not ask for, and we would not know. So are ``http/json``,
  a malformed header list (the official exporter logs and skips the item), a
  certificate or key file that cannot be read, and a client key without a client
  certificate or the reverse. Header values may be credentials: an error shows only
  the start of the faulty item.
* Compression: ``gzip`` or ``none`` (the specification's two; the official gRPC exporter
  refuses ``none``); ``deflate`` too over http/protobuf, as the official HTTP exporter
  and the Collector's HTTP receiver accept it (the Collector's gRPC server has no
  deflate decompressor).
* Protocol default: ``grpc``, the tracer's default since its first release (the
  specification allows keeping it for that reason).

Certificates apply to TLS connections only and are checked then.
``--otlp-endpoint`` serves every signal: without a path (or with ``/``) it is a base URL
like OTEL_EXPORTER_OTLP_ENDPOINT, with one it is used as is (as before this client),
except that a path ending in one signal's ``v1/<signal>`` gets each signal's own: the
URL a user copies for traces must not send metrics and logs to the traces path.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Tuple
from urllib.parse import SplitResult, unquote, urlsplit

from ... import __version__
from ...errors import ExitStatus, TracerError
from .signals import SIGNALS

log = logging.getLogger("spanprobe.tracer")

PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_PROTOCOL = "grpc"
DEFAULT_TIMEOUT_S = 10.0
COMPRESSIONS = {"grpc": ("gzip", "none"), "http/protobuf": ("gzip", "deflate", "none")}
DEFAULT_ENDPOINTS = {"grpc": "http://localhost:4317", "http/protobuf": "http://localhost:4318"}
#: What the exporter says it is (the specification's User-Agent form: exporter, language, version).
USER_AGENT = "spanprobe-OTLP-Exporter-Python/" + __version__

#: The command-line flag behind each Flags field (named in errors).
FLAG_NAMES = {
    "endpoint": "--otlp-endpoint", "protocol": "--otlp-protocol", "headers": "--otlp-header",
    "timeout": "--otlp-timeout", "compression": "--otlp-compression", "insecure": "--otlp-insecure",
    "certificate": "--otlp-certificate", "client_key": "--otlp-client-key",
    "client_certificate": "--otlp-client-certificate",
}

# RFC 7230 token: what a header name (and a W3C baggage key) may be made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_MILLISECONDS = re.compile(r"[0-9]+\Z")


@dataclass(frozen=True)
class Flags:
    """What the command line says (None / empty: not given); flags win over the environment."""

    endpoint: Optional[str] = None
    protocol: Optional[str] = None
    headers: Sequence[Tuple[str, str]] = ()
    timeout: Optional[float] = None          # seconds; 0: no limit
    compression: Optional[str] = None
    insecure: Optional[bool] = None
    certificate: Optional[str] = None
    client_key: Optional[str] = None
    client_certificate: Optional[str] = None


@dataclass(frozen=True)
class OtlpSettings:
    """Where and how one signal is exported. ``sources`` names the flag or variable (or
    "default") each option came from, for messages."""

    signal: str
    protocol: str
    endpoint: str                 # the URL (http/protobuf: with the request path) or gRPC target given
    secure: bool                  # TLS
    host: str                     # where to connect ("" for a unix: gRPC target)
    port: int
    path: str                     # http/protobuf: the request target ("/v1/traces"); gRPC: ""
    headers: Tuple[Tuple[str, str], ...]
    timeout: Optional[float]      # seconds per export, retries included; None: no limit
    compression: str              # "none", "gzip", "deflate"
    certificate: Optional[str] = None
    client_key: Optional[str] = None
    client_certificate: Optional[str] = None
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def grpc_target(self) -> str:
        """The channel target grpcio is given."""
        if not self.host:
            return self.endpoint
        return "%s:%d" % ("[%s]" % self.host if ":" in self.host else self.host, self.port)

    def source(self, option: str) -> str:
        return self.sources.get(option, "default")

    def describe(self) -> str:
        """For the log: 'OTLP/grpc traces to collector:4317 (TLS)'."""
        where = self.endpoint if self.protocol != "grpc" else self.grpc_target
        return "OTLP/%s %s to %s (%s)" % (self.protocol, self.signal, where,
                                          "TLS" if self.secure else "plaintext")


def resolve(signal: str, flags: Flags = Flags(), env: Mapping[str, str] = os.environ) -> OtlpSettings:
    """The settings for ``signal`` ("traces", "metrics", "logs"); TracerError naming the bad value."""
    if signal not in SIGNALS:
        raise ValueError("unknown OTLP signal %r" % signal)
    r = _Resolver(signal, flags, env)
    protocol = r.protocol()
    endpoint, secure, host, port, path = r.endpoint(protocol)
    certificate = client_key = client_certificate = None
    if secure:
        certificate = r.readable_file("certificate", "CERTIFICATE")
        client_key = r.readable_file("client_key", "CLIENT_KEY")
        client_certificate = r.readable_file("client_certificate", "CLIENT_CERTIFICATE")
        if (client_key is None) != (client_certificate is None):
            have, missing = ("client_key", "client_certificate") if client_key else ("client_certificate", "client_key")
            raise _error("%s is given but no %s (%s or %s): mutual TLS needs both" % (
                r.sources[have], missing.replace("_", " "), FLAG_NAMES[missing], r.variable(missing.upper())))
    return OtlpSettings(
        signal=signal, protocol=protocol, endpoint=endpoint, secure=secure, host=host, port=port, path=path,
        headers=r.headers(), timeout=r.timeout(), compression=r.compression(protocol),
        certificate=certificate, client_key=client_key, client_certificate=client_certificate,
        sources=dict(r.sources))


def _error(message: str) -> TracerError:
    return TracerError("OTLP settings: " + message, ExitStatus.USAGE)


def _shown(text: str, limit: int = 8) -> str:
    """The start of a value that may be a secret."""
    return repr(text if len(text) <= limit else text[:limit] + "…") + " (%d characters)" % len(text)


class _Resolver:
    """One resolution: looks each option up (flag, signal variable, generic variable) and notes where it came from."""

    def __init__(self, signal: str, flags: Flags, env: Mapping[str, str]):
        self.signal = signal
        self.flags = flags
        self.env = env
        self.sources: Dict[str, str] = {}

    def variable(self, option: str, specific: bool = True) -> str:
        return "OTEL_EXPORTER_OTLP_%s%s" % (self.signal.upper() + "_" if specific else "", option)

    def lookup(self, name: str, option: str) -> Optional[str]:
        """The flag's value, else the signal's variable, else the generic one (None: none is set)."""
        given = getattr(self.flags, name)
        if given is not None:
            self.sources[name] = FLAG_NAMES[name]
            return given
        for specific in (True, False):
            variable = self.variable(option, specific)
            value = self.env.get(variable, "")
            if value.strip():
                self.sources[name] = variable
                return value
        return None

    def where(self, name: str, value) -> str:
        """'OTEL_EXPORTER_OTLP_TIMEOUT=abc' or "--otlp-timeout 'abc'", for errors."""
        source = self.sources[name]
        return "%s %r" % (source, value) if source.startswith("--") else "%s=%r" % (source, value)

    def protocol(self) -> str:
        value = self.lookup("protocol", "PROTOCOL")
        if value is None:
            return DEFAULT_PROTOCOL
        protocol = value.strip().lower()
        if protocol == "http/json":
            raise _error("%s: http/json is not supported; use grpc or http/protobuf" % self.where("protocol", value))
        if protocol not in PROTOCOLS:
            raise _error("%s is not an OTLP protocol; use grpc or http/protobuf" % self.where("protocol", value))
        return protocol

    def endpoint(self, protocol: str) -> Tuple[str, bool, str, int, str]:
        """(endpoint, secure, host, port, path)."""
        value = self.lookup("endpoint", "ENDPOINT")
        if value is None:
            value = DEFAULT_ENDPOINTS[protocol]
            self.sources["endpoint"] = "default"
        value = value.strip()
        if protocol == "grpc":
            return self.grpc_endpoint(value)
        return self.http_endpoint(value)

    def url(self, value: str) -> Optional[SplitResult]:
        """``value`` split as an http(s) URL with a host and a valid port; None without a scheme."""
        if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", value):
            return None
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https"):
            raise _error("%s: the scheme must be http or https" % self.where("endpoint", value))
        try:
            parts.port
        except ValueError:
            raise _error("%s has an invalid port" % self.where("endpoint", value)) from None
        if not parts.hostname:
            raise _error("%s names no host" % self.where("endpoint", value))
        if parts.username is not None or parts.password is not None:
            raise _error("%s: credentials in the URL are not sent; give them as a header instead"
                         % self.where("endpoint", value))
        return parts

    def http_endpoint(self, value: str) -> Tuple[str, bool, str, int, str]:
        parts = self.url(value)
        if parts is None:
            raise _error("%s is not an http:// or https:// URL" % self.where("endpoint", value))
        source = self.sources["endpoint"]
        path = parts.path
        if source == self.variable("ENDPOINT"):
            path = path or "/"                                   # signal-specific: as is
        elif source != FLAG_NAMES["endpoint"] or path in ("", "/"):
            path = (path if path.endswith("/") else path + "/") + SIGNALS[self.signal].http_path
        else:
            for other in SIGNALS.values():  # a flag naming one signal's path: this signal's instead
                if path.endswith("/" + other.http_path):
                    path = path[:-len(other.http_path)] + SIGNALS[self.signal].http_path
                    break
        secure = parts.scheme.lower() == "https"
        port = parts.port or (443 if secure else 80)
        url = parts._replace(path=path, fragment="").geturl()
        return url, secure, parts.hostname, port, path + ("?" + parts.query if parts.query else "")

    def grpc_endpoint(self, value: str) -> Tuple[str, bool, str, int, str]:
        if value.startswith("unix:"):
            return value, self.insecure() is not True, "", 0, ""
        parts = self.url(value)
        if parts is not None:
            if parts.path not in ("", "/") or parts.query:
                raise _error("%s: an OTLP/gRPC endpoint has no path; give scheme://host:port"
                             % self.where("endpoint", value))
            secure = parts.scheme.lower() == "https"
            self.insecure()  # still checked: a malformed value is an error wherever it is
            return value, secure, parts.hostname, parts.port or (443 if secure else 80), ""
        parts = urlsplit("//" + value)
        try:
            port = parts.port
        except ValueError:
            raise _error("%s has an invalid port" % self.where("endpoint", value)) from None
        if not parts.hostname or parts.path or parts.query or parts.username is not None:
            raise _error("%s is not a gRPC endpoint: give http://host:port, https://host:port, host:port "
                         "or unix:PATH" % self.where("endpoint", value))
        secure = self.insecure() is not True
        return value, secure, parts.hostname, port or 443, ""

    def insecure(self) -> Optional[bool]:
        value = self.lookup("insecure", "INSECURE")
        if value is None or isinstance(value, bool):
            return value
        text = value.strip().lower()
        if text not in ("true", "false"):
            raise _error("%s: expected true or false" % self.where("insecure", value))
        return text == "true"

    def headers(self) -> Tuple[Tuple[str, str], ...]:
        out: Dict[str, str] = {}
        for specific in (True, False):
            variable = self.variable("HEADERS", specific)
            text = self.env.get(variable, "")
            if text.strip():
                self.sources["headers"] = variable
                out.update(self.parse_headers(variable, text))
                break
        for key, value in self.flags.headers:
            self.sources["headers"] = FLAG_NAMES["headers"]
            out[self.header_key(FLAG_NAMES["headers"], key, 0)] = self.header_value(
                FLAG_NAMES["headers"], key, value)
        return tuple(out.items())

    def parse_headers(self, variable: str, text: str) -> Dict[str, str]:
        out = {}
        for number, item in enumerate(text.split(","), 1):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            if not sep:
                raise _error("%s: item %d, %s, is not key=value" % (variable, number, _shown(item)))
            key = self.header_key(variable, key.strip(), number)
            try:
                decoded = unquote(value.strip(), errors="strict")
            except UnicodeDecodeError:
                raise _error("%s: the value of %r is not percent-encoded UTF-8" % (variable, key)) from None
            out[key] = self.header_value(variable, key, decoded)
        return out

    @staticmethod
    def header_key(source: str, key: str, number: int) -> str:
        if not _TOKEN.match(key):
            raise _error("%s: %s%r is not a valid header name" % (source, "item %d, " % number if number else "", key))
        return key.lower()

    @staticmethod
    def header_value(source: str, key: str, value: str) -> str:
        if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in value):
            raise _error("%s: the value of %r has control characters (a header cannot carry them)" % (source, key))
        return value

    def timeout(self) -> Optional[float]:
        value = self.lookup("timeout", "TIMEOUT")
        if value is None:
            return DEFAULT_TIMEOUT_S
        if self.sources["timeout"].startswith("--"):
            seconds = float(value)
            if not math.isfinite(seconds) or seconds < 0:
                raise _error("%s: expected a number of seconds, 0 or more" % self.where("timeout", value))
            return seconds or None
        text = value.strip()
        if not _MILLISECONDS.match(text):
            raise _error("%s is not a whole number of milliseconds (the OpenTelemetry unit: 10000 is ten "
                         "seconds, 0 no limit)" % self.where("timeout", value))
        ms = int(text)
        if 0 < ms < 1000:
            log.warning("%s is %d milliseconds (the OpenTelemetry unit; the official Python exporters read "
                        "seconds): an export that takes longer fails", self.sources["timeout"], ms)
        return ms / 1000 if ms else None

    def compression(self, protocol: str) -> str:
        value = self.lookup("compression", "COMPRESSION")
        if value is None:
            return "none"
        compression = value.strip().lower()
        if compression not in COMPRESSIONS[protocol]:
            raise _error("%s is not supported over %s; use %s" % (self.where("compression", value), protocol,
                                                                 " or ".join(COMPRESSIONS[protocol])))
        return compression

    def readable_file(self, name: str, option: str) -> Optional[str]:
        path = self.lookup(name, option)
        if path is None:
            return None
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise _error("%s: cannot read it: %s" % (self.where(name, path), exc.strerror or exc)) from None
        return path
