"""Cookies -> decoders: which probe of which provider, in which process, a record came from.

Handlers are shared between every probe of the same argument shape, so a
record does not say by itself which span type or probe it belongs to. Each
attachment of a handler to a probe site gets a fresh BPF cookie
(kernel.links.attach), which the handler copies into the record's header;
``bind`` remembers what each cookie stands for, and ``decode`` turns a record
into a SpanRecord, PointRecord or LoadRecord by it.

A later stage may read span records its own way: ``span_path`` (a span
decoder -> the function its records go to instead of its decode) is how the
session hands OTLP-bound span records straight to export.otlp.records.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional, Set, Tuple, Union

from ..kernel.layout import HDR, KIND_LOAD, KIND_NAME, NAME_HASH, NAME_TEXT_AT
from .decoders import Decoder, OtelSpanDecoder, SpanDecoder
from .records import LoadRecord, NameRecord, OtelSpanRecord, PointRecord, SpanRecord


class Bindings:
    """The cookies handed out, each bound to a decoder and a process."""

    def __init__(self, span_path: Optional[Callable[[SpanDecoder], Callable]] = None):
        self.span_path = span_path
        self._next_cookie = 1
        #: cookie -> (the decode method of the records it marks, their process)
        self._by_cookie: Dict[int, Tuple[Callable, int]] = {}
        #: cookies of otel_span probes: point records that carry spans (counted as spans when shed)
        self._otel_cookies: Set[int] = set()

    def bind(self, decoder: Decoder, pid: int) -> int:
        """A fresh cookie standing for ``decoder`` in process ``pid``."""
        cookie = self._next_cookie
        self._next_cookie += 1
        decode = decoder.decode
        if self.span_path is not None and isinstance(decoder, SpanDecoder):
            decode = self.span_path(decoder)
        self._by_cookie[cookie] = (decode, pid)
        if isinstance(decoder, OtelSpanDecoder):
            self._otel_cookies.add(cookie)
        return cookie

    def unbind(self, cookies: Iterable[int]) -> None:
        for c in cookies:
            self._by_cookie.pop(c, None)
            self._otel_cookies.discard(c)

    def is_otel_span(self, rec: bytes) -> bool:
        """Does this record (not decoded) come from an otel_span probe?"""
        return HDR.unpack_from(rec, 0)[5] in self._otel_cookies

    def decode(self, rec: bytes) -> Optional[Union[SpanRecord, PointRecord, OtelSpanRecord, LoadRecord, NameRecord]]:
        """A SpanRecord, PointRecord, OtelSpanRecord, LoadRecord or NameRecord from one ring-buffer record (None if
        unknown); or what ``span_path`` makes of a span record."""
        kind, _shape, _program, pid, tid, cookie = HDR.unpack_from(rec, 0)
        if kind == KIND_LOAD:
            return LoadRecord(pid, tid)
        if kind == KIND_NAME:
            text = rec[NAME_TEXT_AT:].split(b"\0", 1)[0]
            return NameRecord(NAME_HASH.unpack_from(rec, HDR.size)[0], text.decode("utf-8", "replace"))
        binding = self._by_cookie.get(cookie)
        if binding is None or binding[1] != pid:
            return None
        return binding[0](rec, pid, tid)
