"""The `spanprobe` command's answers to bad input: a clear message and a distinct exit status.

These run the real command but load no BPF (every check here fails before
that), so they need root only to look at other processes, not a BPF toolchain.
"""

from __future__ import annotations

import json
import re
import os
import socket
import subprocess

import pytest

from spanprobe_tracer.cli.main import COMMANDS, build_parser
from spanprobe_tracer.errors import ExitStatus
from tests.support.tracer_helpers import run_spanprobe, setpriv, spanprobe_cmd

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="looks at other processes: needs root")


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def gone_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_subcommands_are_registered_in_one_table():
    names = [name for name, _, _ in COMMANDS]
    assert names[:3] == ["list", "trace", "doctor"]
    parser = build_parser()
    assert parser.parse_args(["doctor", "--quick"]).quick


@pytest.mark.parametrize("args", [
    ["trace"],
    ["trace", "--pid", "1", "--all"],
    ["trace", "--all", "--", "true"],
    ["trace", "--all", "--output", "x.jsonl"],
    ["trace", "--all", "--string-size", "5000"],
    ["trace", "--all", "--ring-buffer-mb", "3"],
])
def test_usage_errors(args):
    r = run_spanprobe(*args)
    assert r.returncode == ExitStatus.USAGE, r.stderr
    assert "spanprobe: error:" in r.stderr


def test_bad_option_values_are_usage_errors():
    r = run_spanprobe("trace", "--all", "--min-duration", "soon")
    assert r.returncode == 2 and "not a duration" in r.stderr


@needs_root
def test_no_such_process():
    pid = gone_pid()
    for sub in ("trace", "list"):
        r = run_spanprobe(sub, "--pid", str(pid))
        assert r.returncode == ExitStatus.NO_SUCH_PROCESS, r.stderr
        assert "no process with pid %d" % pid in r.stderr


@needs_root
def test_no_providers(sleeper):
    r = run_spanprobe("trace", "--pid", str(sleeper.pid))
    assert r.returncode == ExitStatus.NO_PROVIDERS
    assert "no spanprobe providers in pid %d" % sleeper.pid in r.stderr and "--wait" in r.stderr
    r = run_spanprobe("list", "--pid", str(sleeper.pid))
    assert r.returncode == ExitStatus.NO_PROVIDERS
    assert "no spanprobe providers" in r.stdout


@needs_root
def test_wait_gives_up_after_the_timeout(sleeper):
    r = run_spanprobe("trace", "--pid", str(sleeper.pid), "--wait", "0.5")
    assert r.returncode == ExitStatus.NO_PROVIDERS


@needs_root
def test_only_a_malformed_provider(tracee):
    tracee.send("load broken bad=json")
    r = run_spanprobe("trace", "--pid", str(tracee.pid))
    assert r.returncode == ExitStatus.NO_PROVIDERS
    assert "provider schema rejected (schema is not valid JSON" in r.stderr


@needs_root
def test_unreachable_endpoint(tracee):
    tracee.send("load shop")
    port = free_port()
    r = run_spanprobe("trace", "--pid", str(tracee.pid), "--exporter", "otlp",
                      "--otlp-endpoint", "http://127.0.0.1:%d" % port)
    assert r.returncode == ExitStatus.ENDPOINT_UNREACHABLE, r.stderr
    assert "cannot reach the OTLP endpoint http://127.0.0.1:%d" % port in r.stderr
    r = run_spanprobe("trace", "--pid", str(tracee.pid), "--exporter", "otlp",
                      env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:%d" % port,
                           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert r.returncode == ExitStatus.ENDPOINT_UNREACHABLE
    assert "/v1/traces" in r.stderr


def as_nobody(args):
    return setpriv("--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all", *args,
                   reason="needs root and setpriv to drop privileges")


def test_missing_privileges(tracee):
    tracee.send("load shop")
    r = subprocess.run(as_nobody(spanprobe_cmd("trace", "--pid", str(tracee.pid))), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == ExitStatus.PERMISSION, r.stderr
    assert "tracing needs root" in r.stderr and "CAP_BPF" in r.stderr


def test_doctor_without_privileges_says_how_to_fix():
    r = subprocess.run(as_nobody(spanprobe_cmd("doctor")), capture_output=True, text=True, timeout=60)
    assert r.returncode == ExitStatus.PERMISSION
    assert "privileges             FAIL" in r.stdout and "fix: run as root" in r.stdout


@needs_root
def test_list_shows_schema_and_json(tracee):
    tracee.send("load shop")
    r = run_spanprobe("list", "--pid", str(tracee.pid))
    assert r.returncode == 0, r.stderr
    assert "provider shop  (/memfd:spanprobe:shop" in r.stdout
    assert "span GET /items [server]  req_start -> req_end  at handle /srv/app.py:42" in r.stdout
    assert "attributes: http.request.method: str, url.path: str" in r.stdout
    assert "event cache.miss  (probe note)" in r.stdout
    assert "probe tick(n: u32, label: str)" in r.stdout
    # req_start: 5 fixed arguments and 7 attributes; the last 6 are in reach of bpftrace 0.17 through a view
    assert "view req_start__a6: req_start's arguments 6-11, for tools that read six" in r.stdout
    assert re.search(r"object for USDT tools: /proc/%d/map_files/[0-9a-f]+-[0-9a-f]+\n" % tracee.pid, r.stdout)
    r = run_spanprobe("list", "--pid", str(tracee.pid), "--json")
    (info,) = json.loads(r.stdout)
    assert info["pid"] == tracee.pid
    (prov,) = info["providers"]
    assert prov["provider"] == "shop" and {s["name"] for s in prov["spans"]} == {"GET /items", "db.query"}
    assert all(p["traceable"] for p in prov["probes"])


@needs_root
def test_list_shows_one_hit_span_probes(tracee_factory):
    """A span with a one-hit span probe: named on its span's line, not listed again as a probe of its own."""
    tracee = tracee_factory(env={"SPANPROBE_TRACEE_ONE_HIT": "1"})
    tracee.send("load shop")
    r = run_spanprobe("list", "--pid", str(tracee.pid))
    assert r.returncode == 0, r.stderr
    assert "span GET /items [server]  req_start -> req_end  (one hit: req_span)  at handle /srv/app.py:42" in r.stdout
    assert "span db.query [client]  db_start -> db_end  (one hit: db_span)\n" in r.stdout
    assert "span probe" not in r.stdout
    (info,) = json.loads(run_spanprobe("list", "--pid", str(tracee.pid), "--json").stdout)
    assert {(s["name"], s["span"]) for s in info["providers"][0]["spans"]} == {("GET /items", "req_span"),
                                                                               ("db.query", "db_span")}
    assert {p["name"]: p["role"] for p in info["providers"][0]["probes"]}["req_span"] == "span"


@needs_root
def test_list_all_finds_the_process(tracee):
    tracee.send("load shop")
    r = run_spanprobe("list", "--all", "--json")
    assert r.returncode == 0
    assert tracee.pid in [i["pid"] for i in json.loads(r.stdout)]
