"""The OpenTelemetry instrumentations at work only while a tracer listens (``SPANPROBE_OTEL_INSTRUMENT``).

The official instrumentations do their work whether or not a span records
(flask/wsgi collects request attributes, dbapi builds an integration for each
connection and wraps each cursor): with the API's own no-op provider they cost
~30% of a small Flask service's requests/s. Under ``opentelemetry-instrument``
with spanprobe's provider that work does not run while nothing listens (mode
``traced``, the default; ``always`` leaves the instrumentations as installed).
``opentelemetry-instrument`` installs the instrumentations as usual; then
``post_instrument`` (entry point group ``opentelemetry_post_instrument``)
takes over those it knows (TOGGLED, CONNECTIONS, FLASK), and a thread polls
the otel_span probe's semaphore every POLL_S seconds:

* TOGGLED instrumentations (they patch library functions, looked up at each
  call) are taken out, and installed with their ``instrument()`` when a tracer
  attaches, taken out with ``uninstrument()`` when the last one leaves. A call
  already running finishes as it began;
* CONNECTIONS instrumentations (dbapi drivers) stay installed, but the
  driver's ``connect`` returns a connection with a switch (ConnectionSwitch),
  opened whenever it was (at start-up, in a pool, through a ``connect``
  imported by name): a cursor made while a tracer listens is the
  instrumentation's own, from its public ``instrument_connection``; one made
  while nothing listens is the driver's;
* Flask apps stay instrumented as the flask instrumentation does it (its
  class is kept installed), and each app made gets a switch (FlaskSwitch) read
  once per request, when it enters the app: a request that enters while a
  tracer listens runs the whole instrumentation (wsgi wrapper, before-request
  and teardown functions), one that enters while nothing listens runs none of
  it, under the API's ``suppress_instrumentation``: a request in flight when a
  tracer attaches is not traced, nor are its later queries and calls (no span
  without its request's); one in flight when it leaves ends as a traced one
  (its span, not fired, is no half span);
* any other instrumentation stays installed, as in ``always``.

Nothing to take over (none of these installed): no thread, as in ``always``.

Taking over never fails opentelemetry-instrument: an error is logged and the
instrumentations stay installed, as in ``always``.
"""

import logging
import os
import sys
import threading
import time
from importlib import import_module
from importlib.metadata import entry_points

import wrapt
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation

from .tracer import TracerProvider, span_probe

log = logging.getLogger("spanprobe.otel")

SETTING = "SPANPROBE_OTEL_INSTRUMENT"
MODES = ("always", "traced")
#: The mode when SETTING is unset (with another provider than spanprobe's, unset means always).
DEFAULT = "traced"
#: How often the semaphore is read: a tracer's first spans come at most this long after it attached.
POLL_S = 0.1
#: Instrumentations (entry point names) installed and taken out as tracers come and go: each patches
#: functions that its library's callers look up at every call (tested here: tests/sdk/otel).
TOGGLED = ("requests",)
#: Instrumentations (entry point names) whose connections get a ConnectionSwitch, with the modules whose
#: ``connect`` they wrap; each instrumentor has the dbapi instrumentors' public ``instrument_connection``.
CONNECTIONS = {"sqlite3": ("sqlite3", "sqlite3.dbapi2")}
#: The instrumentation whose apps get a FlaskSwitch.
FLASK = "flask"
#: Set in a request's WSGI environ when it entered an app while a tracer listened.
TRACED_KEY = "spanprobe.otel.traced"
#: The OnDemand that post_instrument started in this process, if any.
active = None


def _instrumentor_entry_points():
    eps = entry_points()
    group = "opentelemetry_instrumentor"
    return eps.select(group=group) if hasattr(eps, "select") else eps.get(group, ())


def post_instrument():
    """``opentelemetry_post_instrument`` entry point: in ``traced`` mode, take the instrumentations
    opentelemetry-instrument just installed out again, to be installed while a tracer listens."""
    setting = os.environ.get(SETTING, "").strip().lower()
    mode = setting or DEFAULT
    if mode == "always":
        return None
    if mode not in MODES:
        log.error("spanprobe: %s=%r is not one of %s; the instrumentations stay installed",
                  SETTING, os.environ[SETTING], ", ".join(MODES))
        return None
    try:  # opentelemetry-instrument must never fail because of this mode
        if not isinstance(trace.get_tracer_provider(), TracerProvider):
            if setting:  # asked for by name: say why it is not done (unset, it is just not spanprobe's business)
                log.error("spanprobe: %s=traced needs spanprobe's tracer provider (OTEL_PYTHON_TRACER_PROVIDER="
                          "spanprobe or OTEL_PYTHON_CONFIGURATOR=spanprobe); the instrumentations stay installed",
                          SETTING)
            return None
        return _take_over()
    except Exception:
        log.exception("spanprobe: %s=traced could not take over the instrumentations; they stay installed",
                      SETTING)
        return None


def _take_over():
    """post_instrument's work: an OnDemand following the instrumentations found installed, started; on
    failure the instrumentations are installed as before and the error raised."""
    global active
    toggled, switched, flask_instrumentor = [], [], None
    for ep in _instrumentor_entry_points():
        if (ep.name not in TOGGLED and ep.name not in CONNECTIONS and ep.name != FLASK) or ep.module not in sys.modules:
            continue  # not one of ours, or not loaded by opentelemetry-instrument: not installed
        try:
            instrumentor = ep.load()()  # BaseInstrumentor is a singleton: the installed one
        except Exception:  # an entry point that cannot load was not installed either
            continue
        if not instrumentor.is_instrumented_by_opentelemetry:
            continue
        if ep.name == FLASK:
            flask_instrumentor = instrumentor
        elif ep.name in CONNECTIONS:
            switched.append((instrumentor, CONNECTIONS[ep.name]))
        else:
            toggled.append(instrumentor)
    if not (toggled or switched or flask_instrumentor):
        return None  # nothing to follow the probe for
    on_demand = OnDemand(toggled)
    switches = []
    try:
        for instrumentor, modules in switched:
            switch = ConnectionSwitch(instrumentor, on_demand)
            switch.install(modules)  # undone by itself if it fails
            switches.append(switch)
        if flask_instrumentor is not None:
            FlaskSwitch.install(type(flask_instrumentor).__module__, on_demand)
        on_demand.start()
    except Exception:
        for switch in switches:
            switch.remove()
        on_demand.put_back(on_demand.toggled)
        raise
    active = on_demand
    return on_demand


class OnDemand:
    """Tracks whether ``probe`` (the otel_span probe) is enabled, from a thread polling it: ``traced``,
    and ``toggled`` (installed instrumentors) installed exactly while it is (taken out now)."""

    def __init__(self, toggled, probe=None, poll_s=POLL_S):
        self.toggled = list(toggled)
        self.probe = probe if probe is not None else span_probe()  # loaded now, for a tracer to find
        self.poll_s = poll_s
        #: Whether a tracer listened at the last poll; notified after each change.
        self.traced = False
        self.changed = threading.Condition()
        for i, instrumentor in enumerate(self.toggled):
            try:
                instrumentor.uninstrument()
            except Exception:
                self.put_back(self.toggled[:i + 1])
                raise

    @staticmethod
    def put_back(instrumentors):
        """Install ``instrumentors`` again (taken out by a take-over that failed); never raises."""
        for instrumentor in instrumentors:
            try:
                instrumentor.instrument(skip_dep_check=True)
            except Exception:
                log.exception("spanprobe: installing %s again failed", type(instrumentor).__name__)

    def start(self):
        """Poll from a thread, here and in every child forked later (a pre-forking server's workers:
        threads do not survive fork, and each process has its own semaphore)."""
        self._spawn()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _spawn(self):
        threading.Thread(target=self.run, name="spanprobe-instrument", daemon=True).start()

    def _after_fork(self):
        self.changed = threading.Condition()  # the parent's could have been held by a thread now gone
        self._spawn()

    def run(self):
        while True:
            self.step()
            time.sleep(self.poll_s)

    def step(self):
        """Follow the probe's state (instrumentors installed first, taken out last); never raises."""
        listening = bool(self.probe.enabled)
        if listening == self.traced:
            return
        if not listening:
            with self.changed:
                self.traced = False
        for instrumentor in self.toggled:
            try:
                if listening:
                    instrumentor.instrument(skip_dep_check=True)  # checked when opentelemetry-instrument loaded it
                else:
                    instrumentor.uninstrument()
            except Exception:  # the instrumentation's own failure: logged, the others still follow
                log.exception("spanprobe: %s %s failed", "installing" if listening else "taking out",
                              type(instrumentor).__name__)
        with self.changed:
            self.traced = listening
            self.changed.notify_all()


class ConnectionSwitch:
    """A dbapi instrumentation's connections, traced while a tracer listens whenever they were opened.

    The instrumentation wraps the driver's ``connect`` and builds its integration
    for every connection (~10 µs for sqlite3), so taking it out would leave a
    connection opened untraced (at start-up, in a pool) untraced for good.
    Instead its wrapper of ``connect`` is replaced by one returning a
    SwitchedConnection, whose cursors asked for while ``on_demand.traced`` come
    from the instrumentation's ``instrument_connection`` of the connection
    (made once, on first need). The instrumentor stays installed as far as
    anyone asks it: the application's own ``instrument()`` does nothing more,
    its ``uninstrument()`` gives the driver's ``connect`` back.
    """

    def __init__(self, instrumentor, on_demand):
        self.instrumentor = instrumentor
        self.on_demand = on_demand
        self.replaced = []  # (module, the instrumentation's wrapper of connect) replaced

    def install(self, modules):
        """Switch ``connect`` of each module; on failure, undone and raised."""
        try:
            for name in modules:
                module = import_module(name)
                wrapper = module.connect
                if not isinstance(wrapper, wrapt.FunctionWrapper):
                    raise RuntimeError("%s.connect is not the instrumentation's wrapper (%r)" % (name, wrapper))
                module.connect = wrapt.FunctionWrapper(wrapper.__wrapped__, self.connect)
                self.replaced.append((module, wrapper))
        except Exception:
            self.remove()
            raise

    def remove(self):
        """The instrumentation's wrappers of ``connect`` again; never raises."""
        for module, wrapper in self.replaced:
            module.connect = wrapper
        self.replaced = []

    def connect(self, wrapped, instance, args, kwargs):
        return SwitchedConnection(wrapped(*args, **kwargs), self)


#: What the instrumentation's own connection proxy is made of (wrapt 2: without ObjectProxy's __iter__).
_Proxy = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)


class SwitchedConnection(_Proxy):
    """A driver's connection whose cursors are the instrumentation's while a tracer listens (ConnectionSwitch).

    As the instrumentation's own connection proxy, it hands out cursors and is
    its own context manager; ``execute`` on the connection (sqlite3's shortcut)
    is the driver's, untraced in both.
    """

    def __init__(self, connection, switch):
        super().__init__(connection)
        self._self_switch = switch
        self._self_traced = None  # the instrumentation's proxy of this connection, once a cursor was traced

    def cursor(self, *args, **kwargs):
        if self._self_switch.on_demand.traced:
            traced = self._self_traced
            if traced is None:  # two threads racing here make two equivalent proxies: one is kept
                traced = self._self_traced = self._self_switch.instrumentor.instrument_connection(self.__wrapped__)
            return traced.cursor(*args, **kwargs)
        return self.__wrapped__.cursor(*args, **kwargs)

    def __enter__(self):
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self.__wrapped__.__exit__(*exc_info)


class FlaskSwitch:
    """An instrumented Flask app's instrumentation, run for the requests that enter it while traced.

    Put in place as the app is made (FlaskSwitch.install): the app's ``wsgi_app``
    (the instrumentation's wrapper) becomes this switch, which marks a request
    entering while ``on_demand.traced`` and runs the wrapper for it, else the
    app's own ``wsgi_app``; the instrumentation's before-request and teardown
    functions run for marked requests only. Middleware the application wraps
    around ``app.wsgi_app`` afterwards wraps the switch.
    """

    __slots__ = ("on_demand", "wrapper", "plain")

    def __init__(self, on_demand, wrapper, plain):
        self.on_demand = on_demand
        self.wrapper = wrapper
        self.plain = plain

    def __call__(self, environ, start_response):
        if self.on_demand.traced:
            environ[TRACED_KEY] = True
            return self.wrapper(environ, start_response)
        with suppress_instrumentation():  # should a tracer attach meanwhile: no span of this request's
            return self.plain(environ, start_response)

    @staticmethod
    def install(module, on_demand):
        """Make every Flask app from now on get a switch (``module``: the flask instrumentation's)."""
        import flask

        base = flask.Flask  # the instrumentation's class: it instruments each app as it is made

        class Flask(base):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                FlaskSwitch.adopt(self, module, on_demand)

        Flask.__doc__ = base.__doc__
        flask.Flask = Flask

    @staticmethod
    def adopt(app, module, on_demand):
        """Put a switch on ``app``, just made and instrumented (or log why not: it stays instrumented)."""
        import flask

        wrapper = vars(app).get("wsgi_app")
        ours = [[f for f in funcs.get(None, ()) if getattr(f, "__module__", None) == module]
                for funcs in (app.before_request_funcs, app.teardown_request_funcs)]
        if getattr(wrapper, "__module__", None) != module or [len(f) for f in ours] != [1, 1]:
            log.warning("spanprobe: Flask app %r is not instrumented as %s does it; it stays instrumented "
                        "while untraced", app.name, module)
            return
        (before,), (teardown,) = ours

        def traced_before():
            if flask.request.environ.get(TRACED_KEY):
                return before()
            return None

        def traced_teardown(exc):
            if flask.request.environ.get(TRACED_KEY):
                teardown(exc)

        app.before_request_funcs[None] = [traced_before if f is before else f for f in app.before_request_funcs[None]]
        app.teardown_request_funcs[None] = [traced_teardown if f is teardown else f
                                            for f in app.teardown_request_funcs[None]]
        del app.wsgi_app  # the class's method again: the app's own
        app.wsgi_app = FlaskSwitch(on_demand, wrapper, app.wsgi_app)
