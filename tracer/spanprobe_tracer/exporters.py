"""Where spans go: a console a person reads, a JSON-lines file, or an OTLP collector.

All three are OpenTelemetry SDK SpanExporters fed by pipeline.ExportPipeline.

Everything printed comes from the traced application (span names, attribute
values, error messages): untrusted text. The console exporter escapes control
characters, so an attribute cannot move the cursor, clear the screen or forge
a line of output.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, IO, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from .errors import EndpointUnreachable, TracerError

# --- text safety ----------------------------------------------------------------------

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
#: Characters of one untrusted string shown by default (names, keys, paths): a schema may
#: hold a megabyte-long span name.
MAX_SHOWN = 500


def safe_text(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` cut at ``limit`` characters (0: whole), every non-printable character escaped
    (\\x1b, \\u202e, ...)."""
    if limit and len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for c in text:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif c.isprintable():
            out.append(c)
        else:
            code = ord(c)
            out.append("\\x%02x" % code if code < 0x100 else "\\u%04x" % code if code < 0x10000
                       else "\\U%08x" % code)
    return "".join(out)


def format_value(value, limit: int = 200) -> str:
    if isinstance(value, str):
        return '"%s"' % safe_text(value, limit)
    if isinstance(value, bytes):
        shown = value[:limit // 2]
        return "b'%s'%s" % ("".join(chr(b) if 32 <= b < 127 and b not in (39, 92) else "\\x%02x" % b
                                    for b in shown), "…" if len(value) > len(shown) else "")
    if isinstance(value, (list, tuple)):
        return "[%s]" % ", ".join(format_value(v, limit) for v in value)
    return safe_text(repr(value) if isinstance(value, float) else str(value))


def format_duration(ns: int) -> str:
    if ns < 1000:
        return "%d ns" % ns
    if ns < 1_000_000:
        return "%.1f µs" % (ns / 1e3)
    if ns < 1_000_000_000:
        return "%.2f ms" % (ns / 1e6)
    return "%.3f s" % (ns / 1e9)


# --- console --------------------------------------------------------------------------

class ConsoleExporter(SpanExporter):
    """Prints each trace as a tree, once its root span has ended.

    Spans are reported when they end, children first, so a trace is held until
    its root arrives. A trace whose root is not ours (its parent is a span of
    the application's own OpenTelemetry SDK, or another process) is printed
    ``hold_s`` seconds after its last span arrived, with the spans whose
    parent is missing as roots. Bounded: beyond ``max_traces`` held traces the
    oldest is printed as it is.
    """

    def __init__(self, out: IO[str] = None, hold_s: float = 1.0, max_traces: int = 1000,
                 max_attr_len: int = 120):
        self.out = out or sys.stdout
        self.hold_s = hold_s
        self.max_traces = max_traces
        self.max_attr_len = max_attr_len
        self._traces: "OrderedDict[int, Tuple[float, List[ReadableSpan]]]" = OrderedDict()
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            now = time.monotonic()
            ready = []
            for span in spans:
                tid = span.context.trace_id
                entry = self._traces.pop(tid, None)
                group = entry[1] if entry else []
                group.append(span)
                if span.parent is None:
                    ready.append(group)
                else:
                    self._traces[tid] = (now, group)
            while len(self._traces) > self.max_traces:
                ready.append(self._traces.popitem(last=False)[1][1])
            ready.extend(self._expire(now))
            self._print(ready)
        return SpanExportResult.SUCCESS

    def _expire(self, now: float) -> List[List[ReadableSpan]]:
        out = []
        for tid in [t for t, (seen, _) in self._traces.items() if now - seen >= self.hold_s]:
            out.append(self._traces.pop(tid)[1])
        return out

    def tick(self) -> None:
        """Print traces whose root never came (called periodically)."""
        with self._lock:
            self._print(self._expire(time.monotonic()))

    def _print(self, groups: List[List[ReadableSpan]]) -> None:
        if not groups:
            return
        lines: List[str] = []
        for group in groups:
            lines.extend(self.render_trace(group))
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()

    def render_trace(self, spans: List[ReadableSpan]) -> List[str]:
        by_id = {s.context.span_id: s for s in spans}
        children: Dict[int, List[ReadableSpan]] = {}
        roots = []
        for s in spans:
            if s.parent is not None and s.parent.span_id in by_id:
                children.setdefault(s.parent.span_id, []).append(s)
            else:
                roots.append(s)
        roots.sort(key=lambda s: s.start_time or 0)
        first = roots[0]
        res = first.resource.attributes if first.resource else {}
        head = "trace %032x  %s pid %s" % (first.context.trace_id, safe_text(str(res.get("service.name", "?"))),
                                         res.get("process.pid", "?"))
        if first.parent is not None:
            head += "  (joins parent span %016x)" % first.parent.span_id
        lines = [head]

        def walk(span: ReadableSpan, prefix: str, last: bool):
            branch = "└─ " if last else "├─ "
            lines.append(prefix + branch + self.render_span(span))
            child_prefix = prefix + ("   " if last else "│  ")
            items: List[tuple] = [(e.timestamp or 0, "event", e) for e in span.events]
            items += [(c.start_time or 0, "span", c) for c in children.get(span.context.span_id, [])]
            items.sort(key=lambda item: item[0])
            for i, (_, kind, item) in enumerate(items):
                is_last = i == len(items) - 1
                if kind == "span":
                    walk(item, child_prefix, is_last)
                else:
                    offset = (item.timestamp or 0) - (span.start_time or 0)
                    lines.append(child_prefix + ("└─ " if is_last else "├─ ") + "• %s +%s%s" % (
                        safe_text(item.name), format_duration(max(offset, 0)), self._attrs(item.attributes)))

        for i, root in enumerate(roots):
            walk(root, "", i == len(roots) - 1)
        return lines

    def _attrs(self, attributes) -> str:
        if not attributes:
            return ""
        shown = [k for k in attributes if not k.startswith(("code.", "thread.id"))]
        if not shown:
            return ""
        return "  " + " ".join("%s=%s" % (safe_text(k), format_value(attributes[k], self.max_attr_len))
                               for k in shown)

    def render_span(self, span: ReadableSpan) -> str:
        duration = (span.end_time or 0) - (span.start_time or 0)
        kind = span.kind.name.lower()
        text = "%s [%s] %s" % (safe_text(span.name), kind, format_duration(duration))
        if span.status.status_code == StatusCode.ERROR:
            text += "  ERROR"
            if span.status.description:
                text += " " + safe_text(span.status.description, self.max_attr_len)
        attrs = {k: v for k, v in (span.attributes or {}).items() if k != "error.type"}
        return text + self._attrs(attrs)

    def shutdown(self) -> None:
        with self._lock:
            groups = [g for _, g in self._traces.values()]
            self._traces.clear()
            self._print(groups)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# --- JSON lines -------------------------------------------------------------------------

def _json_value(value):
    if isinstance(value, bytes):
        return {"bytes_base64": base64.b64encode(value).decode()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return repr(value)  # NaN/inf are not JSON
    return value


def span_to_dict(span: ReadableSpan) -> dict:
    return {
        "name": span.name,
        "trace_id": "%032x" % span.context.trace_id,
        "span_id": "%016x" % span.context.span_id,
        "parent_span_id": "%016x" % span.parent.span_id if span.parent else None,
        "trace_flags": int(span.context.trace_flags),
        "kind": span.kind.name,
        "start_time_unix_nano": span.start_time,
        "end_time_unix_nano": span.end_time,
        "duration_ns": (span.end_time or 0) - (span.start_time or 0),
        "status": {"code": span.status.status_code.name, "description": span.status.description},
        "attributes": {k: _json_value(v) for k, v in (span.attributes or {}).items()},
        "events": [{"name": e.name, "time_unix_nano": e.timestamp,
                    "attributes": {k: _json_value(v) for k, v in (e.attributes or {}).items()}}
                   for e in span.events],
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
        "resource": {k: _json_value(v) for k, v in (span.resource.attributes if span.resource else {}).items()},
    }


class JsonLinesExporter(SpanExporter):
    """One JSON object per span per line (``-`` or no file: standard output)."""

    def __init__(self, path: Optional[str]):
        self.path = path
        if path in (None, "-"):
            self._file = sys.stdout
            self._owned = False
        else:
            try:
                self._file = open(path, "a", encoding="utf-8")
            except OSError as exc:
                raise TracerError("cannot open --output %s: %s" % (path, exc.strerror)) from None
            self._owned = True

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self._file.write("".join(json.dumps(span_to_dict(s), ensure_ascii=False) + "\n" for s in spans))
            self._file.flush()
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._owned:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# --- OTLP -------------------------------------------------------------------------------

PROTOCOLS = ("grpc", "http/protobuf")


@dataclass
class OtlpSettings:
    """OTLP settings: command-line flags win over the standard OTEL_EXPORTER_OTLP_* variables."""

    endpoint: Optional[str] = None
    protocol: Optional[str] = None
    headers: Dict[str, str] = field(default_factory=dict)
    timeout: Optional[float] = None
    compression: Optional[str] = None
    insecure: Optional[bool] = None

    def resolved_protocol(self, env=os.environ) -> str:
        protocol = (self.protocol or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip()
        if protocol not in PROTOCOLS:
            raise TracerError("OTLP protocol %r is not supported; use one of %s (http/json is not)"
                              % (protocol, ", ".join(PROTOCOLS)))
        return protocol

    def resolved_endpoint(self, env=os.environ) -> str:
        """The URL the exporter will use (with /v1/traces for HTTP)."""
        protocol = self.resolved_protocol(env)
        if protocol == "grpc":
            endpoint = (self.endpoint or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4317")
            return endpoint
        if self.endpoint:
            return _with_traces_path(self.endpoint)
        if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            return _with_traces_path(env["OTEL_EXPORTER_OTLP_ENDPOINT"], force=True)
        return "http://localhost:4318/v1/traces"

    def host_port(self, env=os.environ) -> Tuple[str, int]:
        endpoint = self.resolved_endpoint(env)
        protocol = self.resolved_protocol(env)
        parts = urlsplit(endpoint if "://" in endpoint else "//" + endpoint)
        default = 4317 if protocol == "grpc" else (443 if parts.scheme == "https" else 4318)
        try:
            port = parts.port or default
        except ValueError:
            raise TracerError("OTLP endpoint %r has an invalid port" % endpoint) from None
        if not parts.hostname:
            raise TracerError("OTLP endpoint %r names no host" % endpoint)
        return parts.hostname, port


def _with_traces_path(url: str, force: bool = False) -> str:
    """A base URL gets /v1/traces (as OTEL_EXPORTER_OTLP_ENDPOINT does); a full one is kept."""
    parts = urlsplit(url)
    if force or parts.path in ("", "/"):
        return url.rstrip("/") + "/v1/traces"
    return url


def check_reachable(settings: OtlpSettings, timeout: float = 3.0) -> None:
    """Fail fast (EndpointUnreachable) when nothing listens at the collector's address."""
    host, port = settings.host_port()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise EndpointUnreachable(
            "cannot reach the OTLP endpoint %s (%s:%d): %s. Start the collector, or point "
            "--otlp-endpoint / OTEL_EXPORTER_OTLP_ENDPOINT at it (--otlp-no-check starts anyway and "
            "counts what cannot be delivered)"
            % (settings.resolved_endpoint(), host, port, exc.strerror or exc)) from None


def _fast_grpc_exporter_class():
    """The official OTLP/gRPC exporter, encoding with otlp_wire instead of the official encoder.

    ``_translate_data`` is the exporter's hook for turning SDK spans into the
    request message; everything else (channel, TLS, headers, compression,
    retries with backoff, timeouts) is the official code. The request is
    parsed back into the official message type (C code, under 1 µs a span)
    because the gRPC stub serializes that type itself.
    """
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from .otlp_wire import encode_request

    class FastGrpcSpanExporter(OTLPSpanExporter):
        def _translate_data(self, data):
            return ExportTraceServiceRequest.FromString(encode_request(data))

    return FastGrpcSpanExporter


def make_otlp_exporter(settings: OtlpSettings) -> SpanExporter:
    """The official OTLP span exporter for the configured protocol."""
    protocol = settings.resolved_protocol()
    endpoint = settings.resolved_endpoint()
    kwargs: dict = {"endpoint": endpoint}
    if settings.headers:
        kwargs["headers"] = dict(settings.headers)
    if settings.timeout is not None:
        kwargs["timeout"] = settings.timeout
    compression = (settings.compression or "").strip().lower() or None
    if protocol == "grpc":
        OTLPSpanExporter = _fast_grpc_exporter_class()
        if compression is not None:
            import grpc
            try:
                kwargs["compression"] = {"gzip": grpc.Compression.Gzip, "none": grpc.Compression.NoCompression,
                                         "deflate": grpc.Compression.Deflate}[compression]
            except KeyError:
                raise TracerError("OTLP compression %r is not supported (gzip, deflate, none)" % compression) from None
        insecure = settings.insecure
        if insecure is None and endpoint.startswith("http://"):
            insecure = True
        if insecure is not None:
            kwargs["insecure"] = insecure
        return OTLPSpanExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    if compression is not None:
        try:
            kwargs["compression"] = {"gzip": Compression.Gzip, "deflate": Compression.Deflate,
                                     "none": Compression.NoCompression}[compression]
        except KeyError:
            raise TracerError("OTLP compression %r is not supported (gzip, deflate, none)" % compression) from None
    return HttpExporter(**kwargs)
