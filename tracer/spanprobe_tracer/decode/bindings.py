"""Cookies -> decoders: which probe of which provider, in which process, a record came from.

Handlers are shared between every probe of the same argument shape, so a
record does not say by itself which span type or probe it belongs to. Each
attachment of a handler to a probe site gets a fresh BPF cookie
(kernel.links.attach), which the handler copies into the record's header;
``bind`` remembers what each cookie stands for, and ``decode`` turns a record
into a SpanRecord, PointRecord or LoadRecord by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Union

from ..kernel.layout import HDR, KIND_LOAD, KIND_NAME, NAME_HASH, NAME_TEXT_AT
from .decoders import Decoder
from .records import LoadRecord, NameRecord, OtelSpanRecord, PointRecord, SpanRecord


@dataclass
class Binding:
    """What a cookie stands for: the decoder of the records it marks, and their process."""

    decoder: Decoder
    pid: int


class Bindings:
    """The cookies handed out, each bound to a decoder and a process."""

    def __init__(self):
        self._next_cookie = 1
        self._by_cookie: Dict[int, Binding] = {}

    def bind(self, decoder: Decoder, pid: int) -> int:
        """A fresh cookie standing for ``decoder`` in process ``pid``."""
        cookie = self._next_cookie
        self._next_cookie += 1
        self._by_cookie[cookie] = Binding(decoder, pid)
        return cookie

    def unbind(self, cookies: Iterable[int]) -> None:
        for c in cookies:
            self._by_cookie.pop(c, None)

    def decode(self, rec: bytes) -> Optional[Union[SpanRecord, PointRecord, OtelSpanRecord, LoadRecord, NameRecord]]:
        """A SpanRecord, PointRecord, OtelSpanRecord, LoadRecord or NameRecord from one ring-buffer record (None if unknown)."""
        kind, _shape, _program, pid, tid, cookie = HDR.unpack_from(rec, 0)
        if kind == KIND_LOAD:
            return LoadRecord(pid, tid)
        if kind == KIND_NAME:
            text = rec[NAME_TEXT_AT:].split(b"\0", 1)[0]
            return NameRecord(NAME_HASH.unpack_from(rec, HDR.size)[0], text.decode("utf-8", "replace"))
        binding = self._by_cookie.get(cookie)
        if binding is None or binding.pid != pid:
            return None
        return binding.decoder.decode(rec, pid, tid)
