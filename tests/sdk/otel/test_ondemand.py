"""SPANPROBE_OTEL_INSTRUMENT's traced mode, the default (spanprobe.otel.ondemand): the instrumentations at
work only while a tracer listens, what requests in flight get, and bad settings. A tracer's arrival and
departure are played by raising and lowering the otel_span probe's semaphore in the application (tests/support/ondemand_app.py);
tests/otel/test_services.py has the same mode traced for real, compared span by span with the SDK."""

import collections.abc
import json
import os
import sqlite3
import subprocess
import sys
import types

import pytest
import wrapt

from tests.support import ROOT

# The dev extra has them; the SDK matrix venvs (tests/sdk on each pyenv Python) do not.
pytest.importorskip("opentelemetry.instrumentation.flask")
pytest.importorskip("opentelemetry.instrumentation.sqlite3")
pytest.importorskip("opentelemetry.instrumentation.requests")

INSTRUMENT = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
ENV = {"OTEL_PYTHON_TRACER_PROVIDER": "spanprobe", "OTEL_PYTHON_CONFIGURATOR": "spanprobe",
       "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}


def run_app(**env):
    """The app's steps in the default mode, or with ``env`` (a None value: the variable unset)."""
    full = {"PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin", "PYTHONPATH": ROOT}
    full.update(ENV)
    full.update(env)
    full = {k: v for k, v in full.items() if v is not None}
    r = subprocess.run([INSTRUMENT, sys.executable, "-m", "tests.support.ondemand_app"], env=full, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return {s["step"]: s for s in map(json.loads, r.stdout.splitlines())}, r.stderr


#: Cursors of a connection opened in the request, of one opened at start-up, of one from a ``connect``
#: imported by name at start-up: the driver's, or the sqlite3 instrumentation's.
PLAIN = ["Cursor"] * 3
INSTRUMENTED = ["TracedCursorProxy>Cursor"] * 3
#: An untraced request runs under suppress_instrumentation: a tracer attaching meanwhile gets none of its spans.
UNTRACED = {"recording": False, "kind": None, "cursors": PLAIN, "send_wrapped": False, "suppressed": True}
TRACED = {"recording": True, "kind": "SERVER", "cursors": INSTRUMENTED, "send_wrapped": True, "suppressed": False}
#: SPANPROBE_OTEL_INSTRUMENT=always, or the mode refused: the instrumentations as installed, at work.
INSTALLED = {"recording": False, "kind": None, "cursors": INSTRUMENTED, "send_wrapped": True, "suppressed": False}


@pytest.mark.parametrize("setting", [None, "traced", " Traced "])
def test_instrumentations_work_only_while_a_tracer_listens(setting):
    """Untraced (by default, or asked for), no instrumentation runs: the Flask request has no span (the
    app's own wsgi_app serves it behind the switch), every sqlite3 cursor is the driver's, requests'
    Session.send the library's own. Traced, the request is the flask instrumentation's server span, and
    every cursor the instrumentation's: of a connection opened in the request, of one opened at start-up
    before any tracer, of one from a ``connect`` imported by name at start-up; Session.send is wrapped.
    And again after the tracer left and another came. Every request answers 200 and leaves its thread's
    context empty."""
    steps, stderr = run_app(SPANPROBE_OTEL_INSTRUMENT=setting)
    assert steps["untraced"]["seen"] == UNTRACED
    assert steps["traced"]["seen"] == TRACED
    assert steps["left"]["seen"] == UNTRACED
    assert steps["traced again"]["seen"] == TRACED
    assert all(s["status"] == 200 and s["context_after"] and s["switch"] == "FlaskSwitch" for s in steps.values())
    assert "span missing" not in stderr and "Traceback" not in stderr, stderr


def test_requests_in_flight_keep_what_they_began_with():
    """A request that began untraced stays untraced when a tracer arrives during it: no server span, and
    though its cursors and Session.send are now the instrumentations' (for what comes next), it runs under
    suppress_instrumentation, so they make no span either (none without its request's); one that began
    traced ends as a traced request when the tracer leaves during it (its server span is still current,
    and its teardown runs: the thread's context is empty afterwards), the functions already unwrapped."""
    steps, _ = run_app()
    arrive = steps["arrives during a request"]
    assert arrive["seen"] == dict(UNTRACED, cursors=INSTRUMENTED, send_wrapped=True) and arrive["context_after"]
    leave = steps["leaves during a request"]
    assert leave["seen"]["before"] == TRACED
    assert leave["seen"]["after"] == dict(TRACED, cursors=PLAIN, send_wrapped=False)
    assert leave["context_after"]


def test_the_applications_own_instrument_and_uninstrument_act_as_with_always():
    """The sqlite3 instrumentor stays installed as far as the application can tell: its own instrument()
    on top of opentelemetry-instrument's changes nothing (one proxy a cursor, one span a query, not two);
    its uninstrument() gives sqlite3.connect back, and connections opened before keep their switch, as
    connections keep the instrumentation's proxy in always."""
    steps, _ = run_app()
    assert steps["instrumented by the application too"]["seen"] == TRACED
    assert steps["uninstrumented by the application"]["seen"]["cursors"] == ["Cursor"] + INSTRUMENTED[1:]


def test_nothing_to_take_over_starts_nothing():
    """None of the instrumentations it switches installed: no polling thread, the app as installed."""
    steps, stderr = run_app(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="flask,requests,sqlite3")
    assert steps["untraced"]["seen"] == dict(UNTRACED, suppressed=False)
    assert steps["untraced"]["switch"] != "FlaskSwitch" and steps["untraced"]["threads"] == ["MainThread"]
    assert "spanprobe:" not in stderr  # no message of ours


def test_always_leaves_the_instrumentations_installed():
    steps, stderr = run_app(SPANPROBE_OTEL_INSTRUMENT="always")
    assert steps["untraced"]["seen"] == INSTALLED and steps["untraced"]["switch"] != "FlaskSwitch"
    assert "spanprobe:" not in stderr  # no message of ours


def test_a_bad_setting_is_named_and_the_instrumentations_stay():
    steps, stderr = run_app(SPANPROBE_OTEL_INSTRUMENT="sometimes")
    assert "SPANPROBE_OTEL_INSTRUMENT='sometimes' is not one of always, traced" in stderr
    assert steps["untraced"]["seen"] == INSTALLED
    assert steps["untraced"]["switch"] != "FlaskSwitch"


SDK_ENV = {"OTEL_PYTHON_CONFIGURATOR": "configurator", "OTEL_PYTHON_TRACER_PROVIDER": "sdk_tracer_provider",
           "OTEL_TRACES_EXPORTER": "none"}


def test_traced_mode_needs_spanprobes_provider():
    """With the SDK's provider the mode would leave spans out while nothing attaches to spanprobe: asked for
    by name, it is refused with an error; by default it is simply not spanprobe's business (no message)."""
    steps, stderr = run_app(SPANPROBE_OTEL_INSTRUMENT="traced", **SDK_ENV)
    assert "SPANPROBE_OTEL_INSTRUMENT=traced needs spanprobe's tracer provider" in stderr
    assert steps["untraced"]["seen"]["cursors"] == INSTRUMENTED and steps["untraced"]["switch"] != "FlaskSwitch"
    steps, stderr = run_app(**SDK_ENV)
    assert "spanprobe:" not in stderr  # no message of ours
    assert steps["untraced"]["seen"]["cursors"] == INSTRUMENTED and steps["untraced"]["switch"] != "FlaskSwitch"


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
    """post_instrument never raises into opentelemetry-instrument: a failure (here the installed
    instrumentations not found; or an instrumentor that cannot be taken out, a connect that cannot be
    switched) is logged once, and the instrumentations stay installed (those already taken out are
    installed again)."""
    from spanprobe.otel import ondemand

    def no_entry_points():
        raise RuntimeError("entry points did not load")

    monkeypatch.setenv(ondemand.SETTING, "traced")
    monkeypatch.setattr(ondemand, "TracerProvider", object)   # whatever provider is set passes as spanprobe's
    monkeypatch.setattr(ondemand, "entry_points", no_entry_points)
    with caplog.at_level("ERROR", logger="spanprobe.otel"):
        assert ondemand.post_instrument() is None
    assert [r.getMessage() for r in caplog.records] == [
        "spanprobe: SPANPROBE_OTEL_INSTRUMENT=traced could not take over the instrumentations; they stay installed"]
    assert "entry points did not load" in caplog.text

    toggled = [_Instrumentor(), _Instrumentor(fails=True), _Instrumentor()]
    with pytest.raises(RuntimeError, match="cannot take out"):
        ondemand.OnDemand(toggled, probe=object())
    assert [i.installed for i in toggled] == [True, True, True]
    connect = sqlite3.connect
    try:
        wrapper = sqlite3.connect = wrapt.FunctionWrapper(connect, lambda wrapped, instance, args, kwargs: None)
        with pytest.raises(ImportError):  # sqlite3's switched, then a driver missing: sqlite3's undone
            ondemand.ConnectionSwitch(_Instrumentor(), on_demand=None).install(("sqlite3", "no_such_driver"))
        assert sqlite3.connect is wrapper
        sqlite3.connect = connect
        with pytest.raises(RuntimeError, match="sqlite3.connect is not the instrumentation's wrapper"):
            ondemand.ConnectionSwitch(_Instrumentor(), on_demand=None).install(("sqlite3",))
        assert sqlite3.connect is connect
    finally:
        sqlite3.connect = connect


class _Switch:
    """What a SwitchedConnection asks of its ConnectionSwitch, the tracer's presence played by hand."""

    on_demand = types.SimpleNamespace(traced=False)

    def __init__(self):
        from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
        self.proxies = 0

        def instrument_connection(connection):
            self.proxies += 1
            return SQLite3Instrumentor.instrument_connection(connection)

        self.instrumentor = types.SimpleNamespace(instrument_connection=instrument_connection)


def test_a_switched_connection_is_the_drivers_connection():
    """What the application does with the connection is what it does with the driver's (as with the
    instrumentation's own proxy): an isinstance check, ``with`` giving the connection back and committing,
    the shortcut ``execute``. Its cursors are the driver's while untraced, the instrumentation's while
    traced (one proxy of the connection made, kept), the driver's again after."""
    from spanprobe.otel.ondemand import SwitchedConnection

    switch = _Switch()
    switch.on_demand.traced = False
    db = SwitchedConnection(sqlite3.connect(":memory:"), switch)
    assert isinstance(db, sqlite3.Connection)
    with db as entered:
        assert entered is db
        entered.execute("CREATE TABLE t (x)")
        entered.cursor().execute("INSERT INTO t VALUES (1)")
    assert not db.in_transaction  # committed by __exit__
    assert type(db.cursor()) is sqlite3.Cursor
    switch.on_demand.traced = True
    first, second = db.cursor(), db.cursor()
    assert type(first).__name__ == type(second).__name__ == "TracedCursorProxy" and switch.proxies == 1
    assert first.execute("SELECT x FROM t").fetchall() == [(1,)]
    assert not isinstance(db, collections.abc.Iterable)  # as the instrumentation's proxy and the connection
    switch.on_demand.traced = False
    assert type(db.cursor()) is sqlite3.Cursor
    db.close()
