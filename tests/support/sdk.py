"""Helpers for SDK tests that record probe hits (spanprobe.testing.Recorder)."""


def start_end(rec, base):
    """The recorded hits of span ``base``'s start probe and of its end probe."""
    return rec.of(f"{base}__start"), rec.of(f"{base}__end")
