"""The ``simplehttp`` provider: the seed's ``file_transfer`` probe and the spans of a request.

Everything is declared here, at import, because a provider's probes must all
exist before ``provider.load()`` (done by ``__main__``, not by importing).
"""

import io
import os

import spanprobe

provider = spanprobe.Provider("simplehttp")

#: The seed article's probe, argument for argument. Its bcc script reads
#: ``(char *ipstrptr, char *pathptr, u32 file_size)``: a str is passed as a
#: pointer in an 8-byte slot (``8@``) and u32 as ``4@``, exactly what the
#: seed's ``uint64, uint64, uint32`` declaration produced.
file_transfer = provider.add_probe("file_transfer", client=str, path=str, size="u32")
U32_MAX = 0xFFFF_FFFF

#: The server span of one request, named and attributed after OpenTelemetry's
#: HTTP semantic conventions. The status and body size are only known when
#: the response is done, so they are end attributes (``span.set_end``).
request = provider.span_block(
    "http.server.request", kind="server", probe="request",
    attributes={"http.request.method": str, "url.path": str, "url.scheme": str,
                "client.address": str, "client.port": "u16", "server.port": "u16",
                "network.protocol.version": str},
    end_attributes={"http.response.status_code": "u16", "http.response.body.size": "u64"})


def sent_path(handler, source):
    """The file copyfile() sends: the opened file, or the directory whose listing it is."""
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else handler.translate_path(handler.path)


def bytes_left(source):
    """How many bytes copyfile() will send: the rest of the file or of the listing's buffer."""
    total = source.getbuffer().nbytes if isinstance(source, io.BytesIO) else os.fstat(source.fileno()).st_size
    return total - source.tell()


#: Decorator for ``copyfile(self, source, outputfile)``: the file copy, a child
#: of the request span. Computed attributes run only while a tracer listens.
file_copy = provider.span(
    "file.copy", probe="file_copy",
    computed={"file.path": (str, lambda handler, source, outputfile: sent_path(handler, source)),
              "file.size": ("u64", lambda handler, source, outputfile: bytes_left(source))})
