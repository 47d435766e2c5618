"""A scriptable application with spanprobe probes, driven by the tracer tests.

Run as a script; it reads one command per line on stdin and answers one JSON
line on stdout, so a test can load providers at chosen moments, wait until the
tracer is attached (a probe's semaphore is set), fire spans with known ids and
know the wall-clock window they were fired in.

It uses the SDK's low-level span protocol (docs/abi.md) directly: Provider._declare
with the span roles, and span dicts in Provider._spans.

Commands:
  load NAME [bad=version|json|mismatch]   declare and load provider NAME
  wait NAME [TIMEOUT]       wait until NAME's probes are enabled (tracer attached)
  spans NAME N              N traces: root span with a child span, an event, a failing child
  plain NAME N              fire the plain probe N times
  open NAME                 start a span that never ends (its id is returned)
  slow NAME MS              one root span lasting MS milliseconds, one instant one
  threads NAME N            one trace from each of N threads
  long NAME LEN             one root span whose url.path is LEN bytes of "é" (2 bytes each)
  edge NAME                 one failing root span whose strings and bytes each end a page
                            whose next page was never touched (see at_page_end)
  unload NAME
  exit [CODE]
"""

import ctypes
import json
import mmap
import os
import random
import struct
import sys
import time

from spanprobe import Arg, ArgType as T, Provider

from spanprobe.span import END_ARGS, EVENT_ARGS, START_ARGS


class BadSchemaProvider(Provider):
    """A provider whose embedded schema is broken in a chosen way."""

    def __init__(self, name, bad):
        super().__init__(name)
        self.bad = bad

    def schema(self):
        schema = super().schema()
        if self.bad == "version":
            schema["version"] = 99
        elif self.bad == "mismatch":
            schema["spans"] = [{"name": "ghost", "start": "nope", "end": "nada"}]
        return schema

    def build_image(self, arch):
        if self.bad != "json":
            return super().build_image(arch)
        from spanprobe import schema as schema_mod
        real = schema_mod.encode
        schema_mod.encode = lambda s: b"{not json"
        try:
            return super().build_image(arch)
        finally:
            schema_mod.encode = real


def make_provider(name, bad=None):
    p = BadSchemaProvider(name, bad) if bad else Provider(name)
    probes = {
        "req_start": p._declare("req_start", [*START_ARGS,
            Arg("http.request.method", T.STR), Arg("url.path", T.STR), Arg("user.id", T.I64),
            Arg("retry", T.U8), Arg("big", T.U64), Arg("ratio", T.F64), Arg("payload", T.BYTES)], "span_start"),
        "req_end": p._declare("req_end", [*END_ARGS,
            Arg("http.response.status_code", T.I32), Arg("cached", T.BOOL)], "span_end"),
        "db_start": p._declare("db_start", [*START_ARGS, Arg("db.query.text", T.STR)], "span_start"),
        "db_end": p._declare("db_end", END_ARGS, "span_end"),
        "note": p._declare("note", [*EVENT_ARGS, Arg("note.text", T.STR), Arg("note.n", T.I16)], "event"),
        "tick": p.add_probe("tick", n="u32", label=str),
    }
    p._spans.append({"name": "GET /items", "kind": "server", "start": "req_start", "end": "req_end",
                     "code": {"function": "handle", "filepath": "/srv/app.py", "lineno": 42}})
    p._spans.append({"name": "db.query", "kind": "client", "start": "db_start", "end": "db_end"})
    p._events.append({"name": "cache.miss", "probe": "note"})
    p.load()
    return p, probes


#: The mappings at_page_end() made; values must outlive the probe firing them.
EDGE_PAGES = []


def at_page_end(data):
    """A pointer to ``data`` copied to the very end of a fresh mapping's first page. The second
    page is never touched, so it is not present, and a reader that reads even one byte past the
    value (as a fixed-size bpf_probe_read_user would) faults and gets nothing."""
    pages = mmap.mmap(-1, 2 * mmap.PAGESIZE)
    start = mmap.PAGESIZE - len(data)
    pages[start:mmap.PAGESIZE] = data
    EDGE_PAGES.append(pages)
    return ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(pages, start)))


def fire_edge_span(probes):
    """A failing root span whose strings and bytes all sit at page ends, fired at the raw probe
    sites (fire() would copy them into Python objects). Returns the span id and the values."""
    sid, th, tl = rand64(), rand64(), rand64()
    u64 = ctypes.c_uint64
    values = {"http.request.method": "PATCH", "url.path": "/edge/é", "payload": b"\x00edge\xff",
              "error_type": "EdgeError", "error_message": "the last byte of its page"}
    text = {k: at_page_end(v.encode() + b"\0") for k, v in values.items() if isinstance(v, str)}
    blob = at_page_end(struct.pack("<I", len(values["payload"])) + values["payload"])
    start = probes["req_start"]._site_cell.cell_contents
    end = probes["req_end"]._site_cell.cell_contents
    start(u64(sid), u64(0), u64(th), u64(tl), ctypes.c_uint32(1), text["http.request.method"],
          text["url.path"], ctypes.c_int64(0), ctypes.c_uint8(0), u64(0), u64(0), blob)  # f64: its bits
    end(u64(sid), ctypes.c_uint8(1), text["error_type"], text["error_message"], ctypes.c_uint32(1),
        ctypes.c_int32(500), ctypes.c_uint8(0))
    return "%016x" % sid, dict(values, payload=values["payload"].hex())


def rand64():
    return random.getrandbits(64) or 1


def fire_trace(probes, i):
    """One trace: server span > (client span ok, event, client span failing). Returns its ids."""
    th, tl = rand64(), rand64()
    root, ok_child, bad_child = rand64(), rand64(), rand64()
    probes["req_start"].fire(root, 0, th, tl, 1, "GET", "/items/%d" % i, -i, 3, 2**64 - 1, 0.25,
                             b"\x00\xffpayload")
    probes["db_start"].fire(ok_child, root, th, tl, 1, "SELECT %d" % i)
    probes["note"].fire(ok_child, th, tl, 1, "miss \x1b[31m", -7)
    probes["db_end"].fire(ok_child, 0, "", "", 1)
    probes["db_start"].fire(bad_child, root, th, tl, 1 | (1 << 8), "")  # attribute 0 failed conversion
    probes["db_end"].fire(bad_child, 1, "TimeoutError", "db took too long", 1)
    probes["req_end"].fire(root, 0, "", "", 1, 200, True)
    return {"trace_id": "%016x%016x" % (th, tl), "root": "%016x" % root, "ok_child": "%016x" % ok_child,
            "bad_child": "%016x" % bad_child}


def main():
    providers = {}
    out = sys.stdout
    print(json.dumps({"pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        cmd, args = words[0], words[1:]
        reply = {"ok": True}
        if cmd == "load":
            opts = dict(a.split("=", 1) for a in args[1:])
            providers[args[0]] = make_provider(args[0], opts.get("bad"))
        elif cmd == "wait":
            p, probes = providers[args[0]]
            deadline = time.monotonic() + (float(args[1]) if len(args) > 1 else 30)
            while not (probes["req_start"].enabled and probes["tick"].enabled):
                if time.monotonic() > deadline:
                    reply = {"ok": False, "error": "not enabled"}
                    break
                time.sleep(0.01)
        elif cmd == "spans":
            p, probes = providers[args[0]]
            t0 = time.time_ns()
            traces = [fire_trace(probes, i) for i in range(int(args[1]))]
            reply = {"ok": True, "t0": t0, "t1": time.time_ns(), "traces": traces}
        elif cmd == "plain":
            p, probes = providers[args[0]]
            for i in range(int(args[1])):
                probes["tick"].fire(i, "tick-%d" % i)
        elif cmd == "open":
            p, probes = providers[args[0]]
            sid = rand64()
            probes["req_start"].fire(sid, 0, rand64(), rand64(), 1, "GET", "/open", 0, 0, 0, 0.0, b"")
            reply = {"ok": True, "span_id": "%016x" % sid}
        elif cmd == "slow":
            p, probes = providers[args[0]]
            ids = []
            for delay in (float(args[1]) / 1000, 0):
                sid, th, tl = rand64(), rand64(), rand64()
                probes["req_start"].fire(sid, 0, th, tl, 1, "GET", "/slow" if delay else "/fast", 0, 0, 0, 0.0, b"")
                if delay:  # the fast span's probes back to back: not even sleep(0), which yields the CPU
                    time.sleep(delay)
                probes["req_end"].fire(sid, 0, "", "", 1, 200, False)
                ids.append("%016x" % sid)
            reply = {"ok": True, "slow": ids[0], "fast": ids[1]}
        elif cmd == "threads":
            import threading
            p, probes = providers[args[0]]
            results = [None] * int(args[1])

            def work(k):
                results[k] = dict(fire_trace(probes, k), tid=threading.get_native_id())

            threads = [threading.Thread(target=work, args=(k,)) for k in range(len(results))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            reply = {"ok": True, "traces": results}
        elif cmd == "long":
            p, probes = providers[args[0]]
            sid = rand64()
            probes["req_start"].fire(sid, 0, rand64(), rand64(), 1, "GET", "é" * int(args[1]), 0, 0, 0, 0.0,
                                     b"x" * int(args[1]))
            probes["req_end"].fire(sid, 0, "", "", 1, 200, False)
            reply = {"ok": True, "span_id": "%016x" % sid}
        elif cmd == "edge":
            sid, values = fire_edge_span(providers[args[0]][1])
            reply = {"ok": True, "span_id": sid, "values": values}
        elif cmd == "unload":
            providers.pop(args[0])[0].unload()
        elif cmd == "exit":
            out.write(json.dumps(reply) + "\n")
            out.flush()
            os._exit(int(args[0]) if args else 0)
        else:
            reply = {"ok": False, "error": "unknown command %r" % cmd}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
