"""A traced application for the hardening tests: tracee.py's providers, plus faults.

It reads one command per line and answers one JSON line. Processes it forks
read their commands from a FIFO the test names and answer on the same
stdout, so a test drives a parent and its children alike (App and Child in
hardening_helpers.py).

Commands: tracee.py's (load, unload, wait, spans, open, plain, ... exit), and
  sems NAME            the SDK's view of every semaphore {probe: count}
  burn NAME            fire root spans (no events) in a background thread until `stop`
  stop                 stop burning; replies {"spans": spans fired, "errors": [...]}
  fork FIFO [exec]     fork a child reading commands from FIFO (with `exec`: a fresh
                       interpreter running this file, which loads nothing until told)
  rawload PATH [NAME]  dlopen an ELF object written by the test, through a memfd
                       named spanprobe:NAME (hex; default rawN)
  hostile TEXT         load provider "hostile", TEXT (hex) in its span and event names
  fire_hostile         put that TEXT everywhere a process can: names, attributes, errors,
                       in `hostile` and in `shop` (needs `load shop`)
"""

import json
import os
import sys
import threading

import tracee  # tests/support/tracee.py, beside this script


class App(tracee.App):
    def __init__(self, out):
        super().__init__(out)
        self.raw = []          # (memfd, dlopen handle) of objects loaded with rawload
        self.burner = None
        self.burning = threading.Event()
        self.burnt = 0
        self.burn_errors = []

    def do_sems(self, name):
        self.reply(sems={p: int(probe.enabled) for p, probe in self.probes(name).items()})

    def do_burn(self, name):
        start, end = self.probes(name)["req_start"].fire, self.probes(name)["req_end"].fire
        self.burning.set()

        def burn():
            while self.burning.is_set():
                try:
                    sid = tracee.rand64()
                    start(sid, 0, sid, sid, 1, "GET", "/burn", 0, 0, 0, 0.0, b"")
                    end(sid, 0, "", "", 1, 200, False)
                    self.burnt += 1
                except Exception as exc:  # reported by `stop`: a probe must never raise
                    self.burn_errors.append(repr(exc))

        self.burner = threading.Thread(target=burn)
        self.burner.start()
        self.reply()

    def do_stop(self):
        self.burning.clear()
        self.burner.join()
        self.reply(spans=self.burnt, errors=self.burn_errors)

    def do_fork(self, fifo, mode=""):
        pid = os.fork()
        if pid == 0:
            if mode == "exec":
                fd = os.open(fifo, os.O_RDONLY)
                os.dup2(fd, 0)
                os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), "--child"])
            with open(fifo) as inp:
                self.serve(inp)
            os._exit(0)
        self.reply(child=pid)

    def do_rawload(self, path, name=""):
        import ctypes
        with open(path, "rb") as f:
            data = f.read()
        fd = os.memfd_create("spanprobe:" + (bytes.fromhex(name).decode() if name else "raw%d" % len(self.raw)))
        os.write(fd, data)
        try:
            self.raw.append((fd, ctypes.CDLL("/proc/self/fd/%d" % fd)))
        except OSError as exc:
            os.close(fd)
            return self.reply(loaded=False, error=str(exc))
        self.reply(loaded=True)

    def do_hostile(self, text_hex):
        """Load provider "hostile", whose span and event names carry ``text`` (hex)."""
        from spanprobe import Provider

        text = bytes.fromhex(text_hex).decode()
        p = Provider("hostile")
        self.hostile = (text, p.span_block("span " + text * 3000, attributes={"text": str}, probe="evil"),
                        p.event("event " + text, {"text": str}, probe="evil_event"),
                        p.span_block("failing", probe="failing"), p.add_probe("tick", label=str))
        p.load()
        self.reply()

    def do_fire_hostile(self):
        """Fire everything of `hostile` with its text, and a shop trace and span carrying it."""
        text, block, event, failing, tick = self.hostile
        with block(text):
            event.fire(text)
        try:
            with failing():
                raise ValueError(text)
        except ValueError:
            pass
        tick.fire(text)
        probes = self.probes("shop")
        tracee.fire_trace(probes, 0)
        sid = tracee.rand64()
        probes["req_start"].fire(sid, 0, sid, sid, 1, text, text * 100, 0, 0, 0, 0.0, text.encode())
        probes["req_end"].fire(sid, 1, text, text, 1, 500, False)
        self.reply()


def main():
    if "--child" not in sys.argv:
        print(json.dumps({"pid": os.getpid()}), flush=True)
    App(sys.stdout).serve(sys.stdin)


if __name__ == "__main__":
    main()
