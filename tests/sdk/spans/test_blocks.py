"""Span blocks (``with provider.span_block(...)``) without BPF."""

import asyncio

import pytest

from spanprobe.spans import context
from spanprobe.testing import Recorder
from tests.support.sdk import start_end


# --- with-blocks ---------------------------------------------------------------------


def test_span_block(provider):
    query = provider.span_block("db.query", kind="client", attributes={"db.statement": str, "rows": "u32"})
    evaluated = []

    def lazy_rows():
        evaluated.append(1)
        return 12

    with query("select 1", lazy_rows) as s:  # untraced: a shared no-op, lazy value not called
        assert s.ids is None
    assert evaluated == []
    rec = Recorder(provider)
    with query("select 2", rows=lazy_rows) as s:
        inner_ids = context.current_span()
        assert s.ids == inner_ids
    with pytest.raises(KeyError):
        with query(db_statement="select 3", rows=1):
            raise KeyError("k")
    starts, ends = start_end(rec, "db_query")
    assert [(x["db.statement"], x["rows"]) for x in starts] == [("select 2", 12), ("select 3", 1)]
    assert starts[0]["span_id"] == inner_ids[2]
    assert [e["status"] for e in ends] == [0, 1] and ends[1]["error_type"] == "KeyError"
    assert provider.schema_spans[-1] == {"name": "db.query", "kind": "client", "start": "db_query__start",
                                   "end": "db_query__end", "span": "db_query__span"}
    with pytest.raises(TypeError):
        query("missing rows")  # a wrong call fails like any call, traced or not


def test_span_block_end_attributes(provider):
    request = provider.span_block("http.request", kind="server", attributes={"url.path": str},
                                  end_attributes={"http.response.status_code": "u16", "body.size": "u64"})
    with request("/a") as s:  # untraced: set_end is a no-op that still checks its arguments
        s.set_end(200, body_size=5)
        with pytest.raises(TypeError):
            s.set_end(status=200)
    rec = Recorder(provider)
    with request("/b") as s:
        s.set_end(http_response_status_code=404)
        s.set_end(body_size=lambda: 9)  # later calls add to (or replace) earlier values
    with request("/c") as s:
        with pytest.raises(TypeError):
            s.set_end(1, 2, 3)  # a wrong call fails the same way when traced
        s.set_end(200)          # body.size never given
    with pytest.raises(KeyError):
        with request("/d") as s:
            s.set_end(500)      # given before the raise: sent; body.size: not given
            raise KeyError("k")
    with pytest.raises(KeyError):
        with request("/e"):     # raised before any set_end: nothing given, nothing invented
            raise KeyError("k")
    starts, ends = start_end(rec, "http_request")
    assert [x["url.path"] for x in starts] == ["/b", "/c", "/d", "/e"]
    assert [(e["http.response.status_code"], e["body.size"]) for e in ends] == [(404, 9), (200, 0), (500, 0),
                                                                               (0, 0)]
    status_flag, size_flag = 1 << 8, 1 << (8 + 1)  # end attribute i absent: its conversion-failure bit
    assert [e["flags"] for e in ends] == [0, size_flag, size_flag, status_flag | size_flag]
    assert [e["status"] for e in ends] == [0, 0, 1, 1]


def test_span_block_async(provider):
    block = provider.span_block("async.block")

    async def main():
        async with block():
            await asyncio.sleep(0)
            return context.current_span()

    rec = Recorder(provider)
    ids = asyncio.run(main())
    (start,) = rec.of("async_block__start")
    assert ids[2] == start["span_id"]
