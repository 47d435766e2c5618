"""Attach bcc to USDT probes of one process and print every hit as a JSON line.

Run with an interpreter that has bcc (Debian's /usr/bin/python3):

    usdt_capture.py PID PROBE=TYPE,TYPE,... [PROBE=...]

TYPE is a spanprobe schema type (i8..u64, bool, f64, str, bytes). The script
knows nothing of spanprobe: it reads the arguments the way any USDT tool
does, through bcc's argument-spec parsing, which is what the tests check.
Prints "ATTACHED" once attached, then one JSON object per hit.
"""

import ctypes
import json
import os
import signal
import struct
import sys
import traceback

from bcc import BPF, USDT

STR_MAX = 256

pid = int(sys.argv[1])
probes = []
for spec in sys.argv[2:]:
    name, _, types = spec.partition("=")
    probes.append((name, [t for t in types.split(",") if t]))

C_TYPES = {"i8": "s8", "u8": "u8", "bool": "u8", "i16": "s16", "u16": "u16",
           "i32": "s32", "u32": "u32", "i64": "s64"}
handlers = []
for p, (name, types) in enumerate(probes):
    body = ["    struct hit_t *h = events.ringbuf_reserve(sizeof(struct hit_t));",
            "    if (!h) return 0;",
            f"    h->probe = {p};",
            "    h->faults = 0;  /* ring buffer records are not zeroed */"]
    for i, t in enumerate(types):
        # bcc's readarg refuses a destination of another width than the spec's.
        ctype = C_TYPES.get(t, "u64")
        body.append(f"    {{ {ctype} v = 0; bpf_usdt_readarg({i + 1}, ctx, &v); h->words[{i}] = (u64)v; }}")
        # Read only the value's own bytes: a fixed-size read that runs past the
        # value into a page not present faults whole and reads nothing.
        if t == "str":
            body.append(f"    h->strs[{i}][0] = 0;")
            body.append(f"    if (h->words[{i}] && bpf_probe_read_user_str(&h->strs[{i}], STR_MAX + 1, "
                        f"(void *)h->words[{i}]) < 0) h->faults |= 1 << {i};")
        elif t == "bytes":  # a u32 header (length, bit 31 = truncated), then the data
            body += [f"    {{ u32 n = 0; void *p = (void *)h->words[{i}];",
                     f"      if (bpf_probe_read_user(&n, 4, p) != 0) h->faults |= 1 << {i};",
                     f"      else {{ *(u32 *)h->strs[{i}] = n; n &= 0x7fffffff; if (n > STR_MAX - 4) n = STR_MAX - 4;",
                     f"        if (bpf_probe_read_user(&h->strs[{i}][4], n, p + 4) != 0) h->faults |= 1 << {i}; }} }}"]
    body.append("    events.ringbuf_submit(h, 0);\n    return 0;")
    handlers.append(f"int probe_{p}(struct pt_regs *ctx) {{\n" + "\n".join(body) + "\n}")

text = f"""
#include <uapi/linux/ptrace.h>
#define STR_MAX {STR_MAX}
struct hit_t {{ u32 probe; u32 faults; u64 words[12]; char strs[12][STR_MAX + 1]; }};  /* + 1: a str of STR_MAX and its NUL */
BPF_RINGBUF_OUTPUT(events, 64);
""" + "\n".join(handlers)

usdt = USDT(pid=pid)
for p, (name, _) in enumerate(probes):
    usdt.enable_probe(probe=name, fn_name=f"probe_{p}")
bpf = BPF(text=text, usdt_contexts=[usdt])


def decode(t, word, raw):
    if t == "f64":
        return {"f64_bits": word}
    if t == "str":
        return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    if t == "bytes":
        (header,) = struct.unpack_from("<I", raw)
        n = header & 0x7FFFFFFF
        return {"hex": raw[4:4 + n].hex(), "truncated": bool(header >> 31)}
    size = {"i8": 1, "u8": 1, "bool": 1, "i16": 2, "u16": 2, "i32": 4, "u32": 4, "i64": 8, "u64": 8}[t]
    value = word & ((1 << (8 * size)) - 1)
    if t.startswith("i") and value >> (8 * size - 1):
        value -= 1 << (8 * size)
    return value


class Hit(ctypes.Structure):
    _fields_ = [("probe", ctypes.c_uint32), ("faults", ctypes.c_uint32), ("words", ctypes.c_uint64 * 12),
                ("strs", (ctypes.c_char * (STR_MAX + 1)) * 12)]


def on_event(ctx, data, size):
    try:
        raw = ctypes.cast(data, ctypes.POINTER(Hit)).contents
        name, types = probes[raw.probe]
        if raw.faults:  # a value the tool could not read must not pass for an empty one
            raise RuntimeError(f"{name}: reading argument(s) {raw.faults:#b} faulted")
        args = [decode(t, raw.words[i], bytes(raw.strs[i].raw)) for i, t in enumerate(types)]
        print(json.dumps({"probe": name, "args": args}), flush=True)
    except Exception:  # bcc swallows callback errors; a test must see them
        traceback.print_exc()
        os._exit(3)


bpf["events"].open_ring_buffer(on_event)
# bcc raises semaphores by writing /proc/PID/mem and lowers them only when it
# cleans up, so SIGTERM must end the loop normally. (Raising from the handler
# is not enough: inside bcc's ctypes callback the exception is swallowed.)
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
print("ATTACHED", flush=True)
try:
    while not stopping:
        bpf.ring_buffer_poll(100)
except KeyboardInterrupt:
    pass
