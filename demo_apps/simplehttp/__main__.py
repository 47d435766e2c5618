"""Serve a directory over HTTP with spanprobe probes until SIGINT or SIGTERM.

    python -m demo_apps.simplehttp [--port N] [--directory DIR] [--bind ADDR]

Prints one line when it listens, in http.server's own format so the same
code can read either: "Serving HTTP on HOST port N (http://HOST:N/) ...".
With --port 0 the system picks the port and that line tells it.
"""

import os
import signal
import socket
import sys
import threading
from functools import partial
from http.server import ThreadingHTTPServer

from .. import cli
from . import probes
from .handler import ProbedHandler


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer whose address family follows the bind address (IPv4 or IPv6)."""

    def __init__(self, address, handler):
        self.address_family = socket.getaddrinfo(*address, type=socket.SOCK_STREAM,
                                                 flags=socket.AI_PASSIVE)[0][0]
        super().__init__(address, handler)


def parse_args(argv=None):
    parser = cli.parser("demo_apps.simplehttp", __doc__)
    parser.add_argument("--port", type=cli.int_in(0, 65535, " (a TCP port; 0 picks a free one)"), default=8000,
                        help="TCP port, 0 for any free one (default 8000)")
    parser.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 or :: for every interface)")
    parser.add_argument("--directory", default=os.getcwd(), metavar="DIR",
                        help="directory to serve (default: the current directory)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.directory):
        parser.error(f"--directory {args.directory}: not a directory")
    args.directory = os.path.abspath(args.directory)  # absolute paths in the probes, as in the seed
    return args


def banner(server):
    host, port = server.socket.getsockname()[:2]
    url_host = f"[{host}]" if ":" in host else host
    return f"Serving HTTP on {host} port {port} (http://{url_host}:{port}/) ..."


def serve(args):
    """Serve until a stop signal; the provider is loaded for exactly that long."""
    server = Server((args.bind, args.port), partial(ProbedHandler, directory=args.directory))

    def stop(signum, frame):
        # shutdown() waits for serve_forever() to return, which runs in this
        # (the main) thread: ask from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    with server, probes.provider:
        print(banner(server), flush=True)
        server.serve_forever()
    print("simplehttp: stopped", file=sys.stderr, flush=True)


def main(argv=None):
    serve(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
