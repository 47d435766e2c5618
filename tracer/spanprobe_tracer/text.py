"""Untrusted text made safe to show on a terminal or in a log.

Names, attribute values, error messages, file paths and schema excerpts all
come from the traced processes. Shown as they are, one could move the
cursor, clear the screen, forge a line of output or flood the log; these
helpers escape every non-printable character and cap the length. Every
stage that shows such text uses them (discovery's warnings, the console
exporter, `spanprobe list`, the CLI's log handler).
"""

from __future__ import annotations

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
#: Characters of one untrusted string shown by default (names, keys, paths): a schema may
#: hold a megabyte-long span name.
MAX_SHOWN = 500
#: Characters of one warning or log message shown: they quote what traced processes wrote.
MAX_MESSAGE = 1000


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
