"""Serve a WSGI or ASGI app on 127.0.0.1 and print the port it got, for the drivers to read.

The one line printed when listening is ``listening on http://127.0.0.1:PORT``;
with port 0 the system picks a free port and that line tells it.
"""

import argparse
import logging
import signal
import socket
import threading

BANNER = "listening on http://127.0.0.1:%d"


def parse_port(prog: str, doc: str, argv=None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default 0: any free one)")
    port = parser.parse_args(argv).port
    if not 0 <= port <= 65535:
        parser.error("--port %d: not a TCP port (0-65535)" % port)
    return port


def announce(port: int) -> None:
    print(BANNER % port, flush=True)


def serve_wsgi(app, port: int) -> None:
    """Werkzeug's threaded server: HTTP/1.1 keep-alive, one thread a connection, no line logged per
    request. SIGINT or SIGTERM stops it and the process exits normally (atexit hooks run, so an
    in-process SDK exports what it holds)."""
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", port, app, threaded=True)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    announce(server.server_port)
    server.serve_forever()
    server.server_close()


def serve_asgi(app, port: int) -> None:
    """uvicorn on a socket bound here, so that the port is known before it logs anything."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)  # connections made once the banner is out wait in the backlog for uvicorn
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    announce(sock.getsockname()[1])
    server.run(sockets=[sock])
