"""Run the seed's example end to end: patched http.server, the seed's bcc script, downloads.

    python -m demo_apps.seed        (as root; the tracer uses Debian's python3 with bcc)

Starts the patched server on a free loopback port serving a scratch
directory, attaches the seed's tracer to it, downloads a few files until the
tracer reports them, prints what it printed, and stops both.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from .patch import patched_source

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BCC_PYTHON = "/usr/bin/python3"
FILES = {"index.html": b"<h1>spanprobe</h1>\n", "notes.txt": b"x" * 827, "work.tar": b"\0" * 112640}


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "sdk"), ROOT, env.get("PYTHONPATH", "")])
    return env


def run(python=sys.executable, rounds=3, timeout=60.0):
    """Run the demo; return the tracer's output lines and the served directory."""
    with tempfile.TemporaryDirectory(prefix="spanprobe-seed-") as scratch:
        served = os.path.join(scratch, "www")
        os.mkdir(served)
        for name, data in FILES.items():
            with open(os.path.join(served, name), "wb") as f:
                f.write(data)
        server_py = os.path.join(scratch, "patched_http_server.py")
        with open(server_py, "w", encoding="utf-8") as f:
            f.write(patched_source())
        server = subprocess.Popen(
            [python, server_py, "--bind", "127.0.0.1", "--directory", served, "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env())
        tracer = None
        try:
            banner = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N ..."
            port = int(banner.split(" port ")[1].split()[0])
            tracer = subprocess.Popen([BCC_PYTHON, "-u", os.path.join(HERE, "trace_stapsdt.py"), str(server.pid)],
                                      stdout=subprocess.PIPE, text=True)
            os.set_blocking(tracer.stdout.fileno(), False)
            lines, deadline = [], time.monotonic() + timeout
            # The tracer prints nothing until it sees a transfer: download until it does.
            while len(lines) < len(FILES) * rounds and time.monotonic() < deadline:
                for name in FILES:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/{name}", timeout=10).read()
                time.sleep(0.2)
                lines += [line.rstrip("\n") for line in iter(tracer.stdout.readline, "")]
            return lines, served
        finally:
            for proc in (tracer, server):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    lines, _ = run()
    print("\n".join(lines) if lines else "the seed tracer reported nothing", flush=True)
    return 0 if lines else 1


if __name__ == "__main__":
    sys.exit(main())
