"""SPANPROBE_OTEL_INSTRUMENT=traced (spanprobe.otel.ondemand): the instrumentations at work only while a
tracer listens, what requests in flight get, and bad settings. A tracer's arrival and departure are played
by raising and lowering the otel_span probe's semaphore in the application (tests/support/ondemand_app.py);
tests/otel/test_services.py has the same mode traced for real, compared span by span with the SDK."""

import json
import os
import subprocess
import sys

import pytest

from tests.support import ROOT

# The dev extra has them; the SDK matrix venvs (tests/sdk on each pyenv Python) do not.
pytest.importorskip("opentelemetry.instrumentation.flask")
pytest.importorskip("opentelemetry.instrumentation.sqlite3")
pytest.importorskip("opentelemetry.instrumentation.requests")

INSTRUMENT = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
ENV = {"OTEL_PYTHON_TRACER_PROVIDER": "spanprobe", "OTEL_PYTHON_CONFIGURATOR": "spanprobe",
       "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none", "SPANPROBE_OTEL_INSTRUMENT": "traced"}


def run_app(**env):
    full = {"PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin", "PYTHONPATH": ROOT}
    full.update(ENV)
    full.update(env)
    r = subprocess.run([INSTRUMENT, sys.executable, "-m", "tests.support.ondemand_app"], env=full, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return {s["step"]: s for s in map(json.loads, r.stdout.splitlines())}, r.stderr


UNTRACED = {"recording": False, "kind": None, "connect_wrapped": False, "send_wrapped": False}
TRACED = {"recording": True, "kind": "SERVER", "connect_wrapped": True, "send_wrapped": True}


def test_instrumentations_work_only_while_a_tracer_listens():
    """Untraced, no instrumentation runs: the Flask request has no span (the app's own wsgi_app serves it
    behind the switch), sqlite3.connect and requests' Session.send are the libraries' own. Traced, the
    request is the flask instrumentation's server span and both functions are wrapped; and again after
    the tracer left and another came. Every request answers 200 and leaves its thread's context empty."""
    steps, stderr = run_app()
    assert steps["untraced"]["seen"] == UNTRACED
    assert steps["traced"]["seen"] == TRACED
    assert steps["left"]["seen"] == UNTRACED
    assert steps["traced again"]["seen"] == TRACED
    assert all(s["status"] == 200 and s["context_after"] and s["switch"] == "FlaskSwitch" for s in steps.values())
    assert "span missing" not in stderr and "Traceback" not in stderr, stderr


def test_requests_in_flight_keep_what_they_began_with():
    """A request that began untraced stays untraced when a tracer arrives during it (no server span, no
    half-instrumented request), though the functions are wrapped for what comes next; one that began
    traced ends as a traced request when the tracer leaves during it (its server span is still current,
    and its teardown runs: the thread's context is empty afterwards), the functions already unwrapped."""
    steps, _ = run_app()
    arrive = steps["arrives during a request"]
    assert arrive["seen"] == dict(UNTRACED, connect_wrapped=True, send_wrapped=True) and arrive["context_after"]
    leave = steps["leaves during a request"]
    assert leave["seen"]["before"] == TRACED
    assert leave["seen"]["after"] == dict(TRACED, connect_wrapped=False, send_wrapped=False)
    assert leave["context_after"]


def test_a_bad_setting_is_named_and_the_instrumentations_stay():
    steps, stderr = run_app(SPANPROBE_OTEL_INSTRUMENT="sometimes")
    assert "SPANPROBE_OTEL_INSTRUMENT='sometimes' is not one of always, traced" in stderr
    assert steps["untraced"]["seen"] == dict(UNTRACED, connect_wrapped=True, send_wrapped=True)
    assert steps["untraced"]["switch"] != "FlaskSwitch"


def test_traced_mode_needs_spanprobes_provider():
    """With the SDK's provider the mode would leave spans out while nothing attaches to spanprobe: refused."""
    steps, stderr = run_app(OTEL_PYTHON_CONFIGURATOR="configurator", OTEL_PYTHON_TRACER_PROVIDER="sdk_tracer_provider",
                            OTEL_TRACES_EXPORTER="none")
    assert "SPANPROBE_OTEL_INSTRUMENT=traced needs spanprobe's tracer provider" in stderr
    assert steps["untraced"]["seen"]["connect_wrapped"] and steps["untraced"]["switch"] != "FlaskSwitch"


def test_a_forked_worker_follows_its_own_tracer():
    """A pre-forking server's worker (forked after start-up): the polling thread runs in it too, so a tracer
    attaching to the worker alone gets its requests traced, and the parent stays untraced."""
    steps, _ = run_app()
    assert steps["forked child traced"]["seen"] == TRACED
    assert steps["parent after the fork"]["seen"] == UNTRACED


class _Instrumentor:
    """An instrumentor that records whether it is installed; uninstrument() raises if ``fails``."""

    def __init__(self, fails=False):
        self.installed, self.fails = True, fails

    def instrument(self, skip_dep_check=False):
        self.installed = True

    def uninstrument(self):
        if self.fails:
            raise RuntimeError("cannot take out")
        self.installed = False


def test_a_take_over_that_fails_leaves_everything_installed(monkeypatch, caplog):
    """post_instrument never raises into opentelemetry-instrument: a failure (here the otel_span probe's
    provider not loading; or an instrumentor that cannot be taken out) is logged once, and the
    instrumentations stay installed (those already taken out are installed again)."""
    from spanprobe.otel import ondemand

    def no_probe():
        raise RuntimeError("provider did not load")

    monkeypatch.setenv(ondemand.SETTING, "traced")
    monkeypatch.setattr(ondemand, "TracerProvider", object)   # whatever provider is set passes as spanprobe's
    monkeypatch.setattr(ondemand, "span_probe", no_probe)
    with caplog.at_level("ERROR", logger="spanprobe.otel"):
        assert ondemand.post_instrument() is None
    assert [r.getMessage() for r in caplog.records] == [
        "spanprobe: SPANPROBE_OTEL_INSTRUMENT=traced could not take over the instrumentations; they stay installed"]
    assert "provider did not load" in caplog.text

    toggled = [_Instrumentor(), _Instrumentor(fails=True), _Instrumentor()]
    with pytest.raises(RuntimeError, match="cannot take out"):
        ondemand.OnDemand(toggled, probe=object())
    assert [i.installed for i in toggled] == [True, True, True]
