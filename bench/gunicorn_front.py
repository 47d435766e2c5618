"""gunicorn settings of bench_flask's production-shaped service (``-c python:bench.gunicorn_front``).

One worker process with the gthread worker: the service stays one GIL-bound
process, which `spanprobe trace --pid` traces by the worker's pid (not the
master's, which only forks and watches it). The master prints
demo_apps.otel_services.serve's banner once it listens, the worker
``worker PID`` once it is ready, for the bench to read.
"""

import os

from demo_apps.otel_services import serve

bind = "127.0.0.1:0"
workers = 1
worker_class = "gthread"
threads = 2  # bench_flask passes --threads
keepalive = 75  # wrk keeps its connections for the whole run
loglevel = "warning"
accesslog = None


def when_ready(server):
    serve.announce(server.LISTENERS[0].sock.getsockname()[1])


def post_worker_init(worker):
    print("worker %d" % os.getpid(), flush=True)
