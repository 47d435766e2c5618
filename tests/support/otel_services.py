"""demo_apps.otel_services run as a user would: each service under `opentelemetry-instrument`.

Shared by tests/otel (the SDK and spanprobe exports compared) and
bench/bench_flask.py. A service prints ``listening on http://127.0.0.1:PORT``
(demo_apps.otel_services.serve), is stopped with SIGINT so that an in-process
SDK flushes at exit, and its stderr is kept for failure messages.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

from tests.support import child_env
from tests.support.otlp_receiver import HttpReceiver, ReceivedSpan

BIN = os.path.dirname(sys.executable)
INSTRUMENT = os.path.join(BIN, "opentelemetry-instrument")
#: What every instrumented run sets: no metrics or logs exporters, the SDK's batches sent quickly.
QUIET = {"OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none", "OTEL_BSP_SCHEDULE_DELAY": "50"}
#: The requests of one scenario, in order: a sqlite3 query, a call to back, a route that raises.
SCENARIO = ("/items/1", "/proxy/5", "/boom")


def sdk_env(endpoint: str) -> Dict[str, str]:
    """The official SDK in process, exporting OTLP/HTTP to ``endpoint`` (a receiver's base URL)."""
    return dict(QUIET, OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf",
                OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=endpoint + "/v1/traces")


class Service:
    """``python -m demo_apps.otel_services.MODULE --port 0`` (or ``argv``, a server printing the same
    banner), under opentelemetry-instrument unless ``instrument`` is false; ``env`` is added to the
    environment (OTEL_SERVICE_NAME=MODULE unless set)."""

    def __init__(self, module: str, env: Optional[Dict[str, str]] = None, instrument: bool = True,
                 argv: Optional[List[str]] = None):
        full_env = child_env()
        full_env["OTEL_SERVICE_NAME"] = module
        full_env.update(env or {})
        argv = argv or [sys.executable, "-m", "demo_apps.otel_services." + module, "--port", "0"]
        self.name = module
        self.stderr_file = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(([INSTRUMENT] if instrument else []) + argv, stdout=subprocess.PIPE,
                                     stderr=self.stderr_file, text=True, env=full_env)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError("%s did not start (exit status %s): %r\n%s"
                               % (module, self.proc.poll(), line, self.stderr()))
        self.url = line.split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.pid = self.proc.pid

    def stderr(self) -> str:
        self.stderr_file.seek(0)
        return self.stderr_file.read()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT (an in-process SDK exports what it holds at exit), then wait; killed if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("%s did not exit on SIGINT; stderr:\n%s" % (self.name, self.stderr()))


def start_pair(front: str, env: Dict[str, str], instrument: bool = True) -> List[Service]:
    """``back`` and then ``front`` (a module calling back at BACK_URL), both with ``env``."""
    back = Service("back", env, instrument)
    try:
        return [back, Service(front, dict(env, BACK_URL=back.url), instrument)]
    except BaseException:
        back.stop()
        raise


def run_scenario(url: str, paths=SCENARIO) -> List[int]:
    """GET each path in turn from an uninstrumented client; the status codes."""
    import requests  # the dev extra's; this module is imported where it is installed

    with requests.Session() as session:
        return [session.get(url + path, timeout=30).status_code for path in paths]


#: spanprobe's provider under opentelemetry-instrument, opentelemetry-distro installed or not
#: (with it, the distro's configurator would install the SDK's provider over
#: OTEL_PYTHON_TRACER_PROVIDER; naming spanprobe's configurator replaces it).
SPANPROBE_ENV = dict(QUIET, OTEL_PYTHON_TRACER_PROVIDER="spanprobe", OTEL_PYTHON_CONFIGURATOR="spanprobe")
#: The same, the instrumentations at work from the start, whether or not a tracer listens (by default,
#: only while one does: spanprobe.otel.ondemand).
ALWAYS_ENV = dict(SPANPROBE_ENV, SPANPROBE_OTEL_INSTRUMENT="always")
#: Probe sites of one process using spanprobe's provider: its otel_span probe.
SITES_PER_SERVICE = 1


def otlp_tracer_args(endpoint: str, *pids: int) -> List[str]:
    """`spanprobe trace` arguments: ``pids``, exporting OTLP/HTTP to ``endpoint`` (a receiver's base URL)."""
    args = ["trace", "--exporter", "otlp", "--otlp-protocol", "http/protobuf",
            "--otlp-endpoint", endpoint + "/v1/traces"]
    for pid in pids:
        args += ["--pid", str(pid)]
    return args


def settled(receiver: HttpReceiver, quiet: float = 0.5, timeout: float = 20.0) -> List[ReceivedSpan]:
    """The receiver's spans once no new one has arrived for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        count = receiver.collector.count
        if count == seen:
            break
        seen = count
        time.sleep(quiet)
    return list(receiver.collector.spans)


def sdk_export(front: str) -> List[ReceivedSpan]:
    """The scenario against ``front`` (and back), the official SDK exporting OTLP/HTTP from both."""
    receiver = HttpReceiver()
    try:
        services = start_pair(front, sdk_env(receiver.endpoint))
        try:
            assert run_scenario(services[1].url) == [200, 200, 500]
        finally:
            for service in reversed(services):
                service.stop()
        return settled(receiver)
    finally:
        receiver.stop()
