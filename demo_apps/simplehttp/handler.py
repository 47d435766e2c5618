"""SimpleHTTPRequestHandler with probes; what it serves, and how, is unchanged.

Where the hooks go, and why:

* ``parse_request``: the first moment the method and path are known, so the
  request span begins there (its start attributes need them). It ends when
  ``handle_one_request`` returns, through an ExitStack that also sees any
  exception. A connection that closes without a request line gets no span.
* ``send_response``: every status line goes through it, errors included.
* ``copyfile``: do_GET sends every body (file or directory listing) through
  it, right where the seed's patch fired its probe.
* bytes sent are counted by wrapping ``wfile``, from the end of the headers.
"""

import contextlib
from http.server import SimpleHTTPRequestHandler
from urllib.parse import urlsplit

from . import probes

#: Methods OpenTelemetry names as they are; any other is reported as "_OTHER".
KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})


class BodyCounter:
    """A response stream that counts the bytes written since the headers ended."""

    def __init__(self, stream):
        self.stream = stream
        self.body_bytes = 0

    def write(self, data):
        self.body_bytes += memoryview(data).nbytes
        return self.stream.write(data)

    def __getattr__(self, name):  # flush, close, closed...
        return getattr(self.stream, name)


def otel_method(command):
    return command if command in KNOWN_METHODS else "_OTHER"


class ProbedHandler(SimpleHTTPRequestHandler):
    """Fires ``simplehttp`` probes (probes.py) around the standard handler's own work."""

    _scope = _span = _status = None

    def setup(self):
        super().setup()
        self.wfile = BodyCounter(self.wfile)

    def handle_one_request(self):
        self._span = self._status = None
        self.wfile.body_bytes = 0
        with contextlib.ExitStack() as self._scope:
            super().handle_one_request()
            if self._span is not None:
                self._span.set_end(self._status, self.wfile.body_bytes)

    def parse_request(self):
        ok = super().parse_request()
        target = self.path if ok else ""  # a request line that did not parse has no path
        client_host, client_port = self.client_address[:2]
        self._span = self._scope.enter_context(probes.request(
            otel_method(self.command if ok else None), lambda: urlsplit(target).path, "http",
            client_host, client_port, self.server.server_port,
            lambda: self.request_version.partition("/")[2]))
        return ok

    def send_response(self, code, message=None):
        self._status = int(code)
        super().send_response(code, message)

    def end_headers(self):
        super().end_headers()
        self.wfile.body_bytes = 0

    @probes.file_copy
    def copyfile(self, source, outputfile):
        probes.file_transfer.fire(self.address_string, lambda: probes.sent_path(self, source),
                                  lambda: min(probes.bytes_left(source), probes.U32_MAX))
        super().copyfile(source, outputfile)
