"""Run the seed's example end to end: patched http.server, the seed's bcc script, downloads.

    python -m demo_apps.seed        (as root; the tracer uses Debian's python3 with bcc)

Starts the patched server on a free loopback port serving a scratch
directory, attaches the seed's tracer to it, downloads a few files until the
tracer reports them, prints what it printed, and stops both.
"""

import argparse
import os
import sys
import tempfile

from .drive import serve_and_trace, write_files
from .patch import patched_source


def run(python=sys.executable, rounds=3, timeout=60.0):
    """Run the demo; return the tracer's output lines and the served directory."""
    with tempfile.TemporaryDirectory(prefix="spanprobe-seed-") as scratch:
        served = os.path.join(scratch, "www")
        os.mkdir(served)
        write_files(served)
        server_py = os.path.join(scratch, "patched_http_server.py")
        with open(server_py, "w", encoding="utf-8") as f:
            f.write(patched_source())
        argv = [python, server_py, "--bind", "127.0.0.1", "--directory", served, "0"]
        return serve_and_trace(argv, rounds, timeout), served


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    lines, _ = run()
    print("\n".join(lines) if lines else "the seed tracer reported nothing", flush=True)
    return 0 if lines else 1


if __name__ == "__main__":
    sys.exit(main())
