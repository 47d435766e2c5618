"""A scriptable application with spanprobe probes, driven by the tracer tests.

Run as a script; it reads one command per line on stdin and answers one JSON
line on stdout, so a test can load providers at chosen moments, wait until the
tracer is attached (a probe's semaphore is set), fire spans with known ids and
know the wall-clock window they were fired in.

It uses the SDK's low-level span protocol (docs/abi.md) directly: Provider.declare
with the span roles, and span dicts given to Provider.add_schema_span. With
SPANPROBE_TRACEE_ONE_HIT=1 each span also has a one-hit span probe, fired as the
SDK fires it (OneHitSpan): the same tests then run on the one-hit path.

Commands:
  load NAME [bad=version|json|mismatch]   declare and load provider NAME
  wait NAME [TIMEOUT]       wait until NAME's probes are enabled; replies {"enabled": bool}
  spans NAME N              N traces: root span with a child span, an event, a failing child;
                            replies the traces' ids, "spans": 3N and the window "t0".."t1"
  plain NAME N              fire the plain probe N times
  open NAME [N]             start N spans (default 1) that never end
  slow NAME MS              one root span lasting MS milliseconds, one instant one
  threads NAME N            one trace from each of N threads
  long NAME LEN             one root span whose url.path is LEN bytes of "é" (2 bytes each)
  edge NAME                 one failing root span whose strings and bytes each end a page
                            whose next page was never touched (see at_page_end)
  begin NAME N SEED [remote] the first half of N traces shared with another process: a root span
                            (left open) with a client child; ids from SEED; with "remote", each
                            root has a remote parent and trace flags 1 (even i) or 0 (odd i)
  join NAME N SEED [remote] the other half, in this process: for each trace of SEED, a server
                            span, child of that root, with a client child of its own
  finish NAME               end the roots begin left open; replies the traces (see shared_traces)
  web NAME                  declare and load provider NAME with one HTTP server span, "http.server"
                            (start: http.request.method, http.route; end: http.response.status_code)
  requests NAME N           N of those spans, methods, routes and statuses in turn; replies how many
                            of each ("METHOD ROUTE STATUS": n)
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

from spanprobe.abi.protocol import END_ARGS, EVENT_ARGS, ROLE_SPAN, SPAN_ARGS, START_ARGS
from spanprobe.spans.onehit import SpanProbeCode

#: SPANPROBE_TRACEE_ONE_HIT=1: every span also has a one-hit span probe, fired as the SDK fires it (OneHitSpan).
ONE_HIT = os.environ.get("SPANPROBE_TRACEE_ONE_HIT") == "1"


class _Half:
    """The start or the end of a OneHitSpan, fired like a probe: ``fire(*args)``."""

    def __init__(self, fire, probes):
        self.fire = fire
        self._probes = probes

    @property
    def enabled(self):
        return any(p.enabled for p in self._probes)


class OneHitSpan:
    """A hand-declared span that also has the SDK's one-hit span probe, fired by the SDK's own emitter
    (spanprobe.spans.onehit) by the SDK's rule (spans/definition.py): at a start, the start probe if the
    start or end probe is listened to, and the clock if the span probe is; at the end, the end probe if
    the start was fired, the span probe if the clock was read and it is still listened to."""

    def __init__(self, start, end, one):
        self.emit = SpanProbeCode(one, start, end).emit
        self.probes = (start, end, one)
        self.open = {}
        self.start, self.end = _Half(self._start, self.probes), _Half(self._end, self.probes)

    def _start(self, sid, parent, high, low, flags, *values):
        start, end, one = self.probes
        pair = bool(start.enabled or end.enabled)
        t0 = time.clock_gettime_ns(time.CLOCK_BOOTTIME) if one.enabled else 0
        if pair:
            start.fire(sid, parent, high, low, flags, *values)
        self.open[sid] = (pair, t0, parent, high, low, flags, values)

    def _end(self, sid, status, error_type, error_message, flags, *values):
        start, end, one = self.probes
        pair, t0, parent, high, low, start_flags, start_values = self.open.pop(sid)
        if pair:
            end.fire(sid, status, error_type, error_message, flags, *values)
        if t0 and one.enabled:
            self.emit(t0, sid, parent, high, low, start_flags, status, error_type.encode() or None,
                      error_message.encode() or None, *start_values, *values)
            if one.conversion_failures:  # the emitter dropped a span (an SDK bug): the test must see it
                raise RuntimeError(f"{one.qualname}: span dropped by the span probe's emitter")


def declare_span(p, name, start, end, entry):
    """Declare a span's start and end probes (and with ONE_HIT its span probe): (start, end) to fire."""
    start = p.declare(start[0], start[1], "span_start")
    end = p.declare(end[0], end[1], "span_end")
    if not ONE_HIT:
        p.add_schema_span(entry)
        return start, end
    one = p.declare(name, SPAN_ARGS, ROLE_SPAN)
    p.add_schema_span(dict(entry, span=name))
    span = OneHitSpan(start, end, one)
    return span.start, span.end


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
        from spanprobe.abi import schema as schema_mod
        real = schema_mod.encode
        schema_mod.encode = lambda s: b"{not json"
        try:
            return super().build_image(arch)
        finally:
            schema_mod.encode = real


def make_provider(name, bad=None):
    p = BadSchemaProvider(name, bad) if bad else Provider(name)
    probes = {}
    probes["req_start"], probes["req_end"] = declare_span(
        p, "req_span",
        ("req_start", [*START_ARGS, Arg("http.request.method", T.STR), Arg("url.path", T.STR), Arg("user.id", T.I64),
                       Arg("retry", T.U8), Arg("big", T.U64), Arg("ratio", T.F64), Arg("payload", T.BYTES)]),
        ("req_end", [*END_ARGS, Arg("http.response.status_code", T.I32), Arg("cached", T.BOOL)]),
        {"name": "GET /items", "kind": "server", "start": "req_start", "end": "req_end",
         "code": {"function": "handle", "filepath": "/srv/app.py", "lineno": 42}})
    probes["db_start"], probes["db_end"] = declare_span(
        p, "db_span", ("db_start", [*START_ARGS, Arg("db.query.text", T.STR)]), ("db_end", END_ARGS),
        {"name": "db.query", "kind": "client", "start": "db_start", "end": "db_end"})
    probes["note"] = p.declare("note", [*EVENT_ARGS, Arg("note.text", T.STR), Arg("note.n", T.I16)], "event")
    probes["tick"] = p.add_probe("tick", n="u32", label=str)
    p.add_schema_event({"name": "cache.miss", "probe": "note"})
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
    start = probes["req_start"].site
    end = probes["req_end"].site
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


WEB = {"methods": ("GET", "POST"), "routes": ("/items/{id}", "/users/{id}/orders", "/"),
       "statuses": (200, 404, 500, 201)}


def make_web_provider(name):
    p = Provider(name)
    probes = {}
    probes["start"], probes["end"] = declare_span(
        p, "http_span", ("http_start", [*START_ARGS, Arg("http.request.method", T.STR), Arg("http.route", T.STR)]),
        ("http_end", [*END_ARGS, Arg("http.response.status_code", T.I32)]),
        {"name": "http.server", "kind": "server", "start": "http_start", "end": "http_end"})
    p.load()
    return p, probes


def shared_traces(n, seed, remote=False):
    """The ids of ``n`` traces two processes share (begin / join): the same for the same seed."""
    rng = random.Random(int(seed))
    out = []
    for i in range(int(n)):
        ids = {k: rng.getrandbits(64) | 1 for k in ("hi", "lo", "root", "local", "child", "grandchild", "remote")}
        ids["flags"] = (1 - i % 2) if remote else 1
        ids["parent"] = ids["remote"] if remote else 0
        ids["trace_id"] = "%016x%016x" % (ids["hi"], ids["lo"])
        out.append(ids)
    return out


class App:
    """The command loop: a line ``CMD ARG...`` calls do_CMD(ARG...), which answers one JSON line.
    tests/hardening/app.py extends it with fault commands."""

    def __init__(self, out):
        self.out = out
        self.providers = {}

    def probes(self, name):
        return self.providers[name][1]

    def reply(self, ok=True, **fields):
        self.out.write(json.dumps(dict(ok=ok, **fields)) + "\n")
        self.out.flush()

    def serve(self, inp):
        for line in inp:
            words = line.split()
            if words:
                handler = getattr(self, "do_" + words[0], None)
                if handler is None:
                    self.reply(False, error="unknown command %r" % words[0])
                else:
                    handler(*words[1:])

    def do_load(self, name, *options):
        opts = dict(option.split("=", 1) for option in options)
        self.providers[name] = make_provider(name, opts.get("bad"))
        self.reply()

    def do_unload(self, name):
        self.providers.pop(name)[0].unload()
        self.reply()

    def do_wait(self, name, timeout="30"):
        probes = self.probes(name)
        deadline = time.monotonic() + float(timeout)
        while not (probes["req_start"].enabled and probes["tick"].enabled):
            if time.monotonic() > deadline:
                return self.reply(enabled=False)
            time.sleep(0.01)
        self.reply(enabled=True)

    def do_spans(self, name, n):
        t0 = time.time_ns()
        traces = [fire_trace(self.probes(name), i) for i in range(int(n))]
        self.reply(t0=t0, t1=time.time_ns(), traces=traces, spans=3 * len(traces))

    def do_plain(self, name, n):
        tick = self.probes(name)["tick"]
        for i in range(int(n)):
            tick.fire(i, "tick-%d" % i)
        self.reply()

    def do_open(self, name, n="1"):
        start = self.probes(name)["req_start"]
        for _ in range(int(n)):
            start.fire(rand64(), 0, rand64(), rand64(), 1, "GET", "/open", 0, 0, 0, 0.0, b"")
        self.reply()

    def do_slow(self, name, ms):
        probes = self.probes(name)
        ids = []
        for delay in (float(ms) / 1000, 0):
            sid, th, tl = rand64(), rand64(), rand64()
            probes["req_start"].fire(sid, 0, th, tl, 1, "GET", "/slow" if delay else "/fast", 0, 0, 0, 0.0, b"")
            if delay:  # the fast span's probes back to back: not even sleep(0), which yields the CPU
                time.sleep(delay)
            probes["req_end"].fire(sid, 0, "", "", 1, 200, False)
            ids.append("%016x" % sid)
        self.reply(slow=ids[0], fast=ids[1])

    def do_threads(self, name, n):
        import threading
        probes = self.probes(name)
        results = [None] * int(n)

        def work(k):
            results[k] = dict(fire_trace(probes, k), tid=threading.get_native_id())

        threads = [threading.Thread(target=work, args=(k,)) for k in range(len(results))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.reply(traces=results)

    def do_long(self, name, length):
        probes = self.probes(name)
        sid = rand64()
        probes["req_start"].fire(sid, 0, rand64(), rand64(), 1, "GET", "é" * int(length), 0, 0, 0, 0.0,
                                 b"x" * int(length))
        probes["req_end"].fire(sid, 0, "", "", 1, 200, False)
        self.reply(span_id="%016x" % sid)

    def do_edge(self, name):
        sid, values = fire_edge_span(self.probes(name))
        self.reply(span_id=sid, values=values)

    def do_begin(self, name, n, seed, *remote):
        p = self.probes(name)
        self.shared = shared_traces(n, seed, bool(remote))
        for t in self.shared:
            p["req_start"].fire(t["root"], t["parent"], t["hi"], t["lo"], t["flags"], "GET", "/shared", 0, 0, 0,
                                0.0, b"")
            p["db_start"].fire(t["local"], t["root"], t["hi"], t["lo"], t["flags"], "SELECT 1")
            p["db_end"].fire(t["local"], 0, "", "", 0)
        self.reply(traces=len(self.shared))

    def do_join(self, name, n, seed, *remote):
        p = self.probes(name)
        for t in shared_traces(n, seed, bool(remote)):
            p["req_start"].fire(t["child"], t["root"], t["hi"], t["lo"], t["flags"], "GET", "/joined", 0, 0, 0,
                                0.0, b"")
            p["db_start"].fire(t["grandchild"], t["child"], t["hi"], t["lo"], t["flags"], "SELECT 2")
            p["db_end"].fire(t["grandchild"], 0, "", "", 0)
            p["req_end"].fire(t["child"], 0, "", "", 0, 200, False)
        self.reply()

    def do_finish(self, name):
        p = self.probes(name)
        for t in self.shared:
            p["req_end"].fire(t["root"], 0, "", "", 0, 200, False)
        self.reply(traces=[t["trace_id"] for t in self.shared])

    def do_web(self, name):
        self.providers[name] = make_web_provider(name)
        self.reply()

    def do_requests(self, name, n):
        p = self.probes(name)
        counts = {}
        for i in range(int(n)):
            method = WEB["methods"][i % 2]
            route = WEB["routes"][i % 3]
            status = WEB["statuses"][i % 4]
            sid = rand64()
            p["start"].fire(sid, 0, rand64(), rand64(), 1, method, route)
            p["end"].fire(sid, 1 if status >= 500 else 0, "HTTPError" if status >= 500 else "", "", 0, status)
            key = "%s %s %d" % (method, route, status)
            counts[key] = counts.get(key, 0) + 1
        self.reply(counts=counts)

    def do_exit(self, code="0"):
        self.reply()
        os._exit(int(code))


def main():
    print(json.dumps({"pid": os.getpid()}), flush=True)
    App(sys.stdout).serve(sys.stdin)


if __name__ == "__main__":
    main()
