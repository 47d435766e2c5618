"""Providers and probes: declare at run time, load, fire.

The hot path is ``probe.fire(...)`` with nobody listening. It is a function
generated per probe with exactly the probe's parameters, so a wrong argument
count fails like any Python call at no cost, and its body is one truth test
of the probe's Semaphore. Only when a tracer has set the semaphore are the
arguments converted and the probe site called.
"""

import logging
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Tuple

from . import loader, schema as schema_mod
from . import firing
from .convert import converter
from .elf.arch import host_arch
from .elf.writer import ProbeSite, write_provider
from .errors import DeclarationError, ProviderStateError
from .semaphore import Semaphore, unattached
from .types import MAX_ARGS, ArgType

log = logging.getLogger("spanprobe")

MAX_NAME_LENGTH = 64


@dataclass(frozen=True)
class Arg:
    name: str
    type: ArgType


def _check_name(kind, name):
    if not isinstance(name, str):
        raise DeclarationError(f"{kind} name must be a str, got {type(name).__name__}")
    if not schema_mod.is_identifier(name):
        raise DeclarationError(
            f"{kind} name {name!r} is not a C identifier "
            "(ASCII letters, digits and '_', not starting with a digit)")
    if len(name) > MAX_NAME_LENGTH:
        raise DeclarationError(f"{kind} name {name!r} is {len(name)} characters; the limit is {MAX_NAME_LENGTH}")


def _cell(function, name):
    return function.__closure__[function.__code__.co_freevars.index(name)]


def _unloaded_site(*args):
    """Where emit() lands if it races with unload(): nowhere."""


class Probe:
    """One USDT probe. Create it with Provider.add_probe()."""

    __slots__ = ("provider", "name", "args", "role", "fire", "enabled", "_emit",
                 "_gate_cell", "_site_cell", "__weakref__")

    def __init__(self, provider, name, args, role, converters=None):
        self.provider = provider
        self.name = name
        self.args: Tuple[Arg, ...] = tuple(args)
        self.role = role
        converters = tuple(converters or (
            converter(a.type, f"probe {provider.name}:{name} argument {a.name!r}") for a in self.args))
        factory = firing.generate(self.qualname, self.args)
        #: The probe's Semaphore: truthy while a tracer is attached. Read it
        #: where you test it; after unload() an old one reads 0 forever.
        self.enabled = unattached()
        self.fire, self._emit = factory(self.enabled, _unloaded_site, converters)
        self._gate_cell = _cell(self.fire, "_sp_gate")
        self._site_cell = _cell(self._emit, "_sp_site")

    @property
    def qualname(self):
        return f"{self.provider.name}:{self.name}"

    def fire_lazy(self, make_args):
        """Fire with the tuple ``make_args()`` returns, calling it only when enabled."""
        if self.enabled:
            self._emit(*make_args())

    def _attach_site(self, semaphore, site):
        """Point fire() at a loaded probe site (site first: the gate opens onto it)."""
        self._site_cell.cell_contents = site
        self._gate_cell.cell_contents = semaphore
        self.enabled = semaphore

    def _detach_site(self):
        self._attach_site(unattached(), _unloaded_site)

    def __repr__(self):
        args = ", ".join(f"{a.name}: {a.type.value}" for a in self.args)
        return f"<Probe {self.qualname}({args}) enabled={self.enabled}>"


def _parse_args(positional, named):
    args = []
    for i, item in enumerate(positional):
        if isinstance(item, Arg):
            args.append(item)
        elif isinstance(item, tuple) and len(item) == 2:
            args.append(Arg(item[0], ArgType.parse(item[1])))
        else:
            args.append(Arg(f"arg{i}", ArgType.parse(item)))
    args.extend(Arg(name, ArgType.parse(t)) for name, t in named.items())
    return args


def _check_args(probe_name, args):
    if len(args) > MAX_ARGS:
        raise DeclarationError(
            f"probe {probe_name!r} declares {len(args)} arguments; USDT probes carry at most {MAX_ARGS}")
    seen = set()
    for arg in args:
        if not isinstance(arg.name, str) or not arg.name or not all(
                schema_mod.is_identifier(part) for part in arg.name.split(".")):
            raise DeclarationError(
                f"probe {probe_name!r}: argument name {arg.name!r} must be an identifier, "
                "optionally dotted (http.request.method)")
        if arg.name in seen:
            raise DeclarationError(f"probe {probe_name!r}: argument {arg.name!r} is declared twice")
        seen.add(arg.name)


_noop_warned = False
_noop_lock = threading.Lock()


def _warn_noop(reason):
    global _noop_warned
    with _noop_lock:
        if _noop_warned:
            return
        _noop_warned = True
    warnings.warn(f"spanprobe: USDT probes are unavailable here ({reason}); "
                  "providers load as no-ops and the application runs unchanged",
                  RuntimeWarning, stacklevel=3)


class Provider:
    """A named set of probes, backed by one shared object once loaded.

    Declare every probe, then load(); probes are visible to USDT tools from
    then until unload(). Usable as a context manager.
    """

    def __init__(self, name):
        _check_name("provider", name)
        self.name = name
        self.probes = {}
        self._spans = []
        self._events = []
        self._backing = None
        self._loaded = False
        self._lock = threading.RLock()

    # --- declaring -----------------------------------------------------------

    def add_probe(self, name, *args, **named_args):
        """Declare a probe and return it.

        Arguments are given as types (``int``, ``str``, ``"u32"``,
        ``ArgType.U32``) which are then named arg0, arg1, ...; as
        ``(name, type)`` pairs; or as keywords in order: ``add_probe("x",
        path=str, size="u32")``.
        """
        return self._declare(name, _parse_args(args, named_args), "plain")

    def _declare(self, name, args, role, converters=None):
        with self._lock:
            if self._loaded:
                raise ProviderStateError(
                    f"provider {self.name!r} is loaded; declare probes before load() or after unload()")
            _check_name("probe", name)
            if name in self.probes:
                raise DeclarationError(f"provider {self.name!r} already has a probe named {name!r}")
            _check_args(name, args)
            probe = Probe(self, name, args, role, converters)
            self.probes[name] = probe
            return probe

    # --- spans and events (span.py, event.py; protocol in docs/abi.md) --------

    def span(self, name=None, *, kind="internal", attributes=None, computed=None,
             record_return=None, probe=None):
        """Decorator: each call of the function is a span (probes ``<name>__start``/``__end``).

        Works on functions, async functions (the span covers the awaits),
        methods, classmethods and staticmethods; usable as ``@provider.span``
        or ``@provider.span("name", ...)``. ``name`` defaults to the
        function's qualified name. ``attributes``: parameters to capture,
        as True (all), names (types from annotations) or ``{param: type}``
        / ``{param: ("attribute.name", type)}``. ``computed``: ``{"attr":
        (type, fn)}``, fn called with the call's arguments, only when
        traced. ``record_return``: the return value's type (attribute
        ``result``) or ``("name", type)``. docs/sdk-spans.md has the details.
        """
        from .span import span_decorator
        return span_decorator(self, name, kind=kind, attributes=attributes, computed=computed,
                              record_return=record_return, probe=probe)

    def span_block(self, name, *, kind="internal", attributes=None, end_attributes=None, probe=None):
        """Declare a span for ``with`` blocks; returns ``block(*values)`` -> context manager.

        ``attributes`` is ``{name: type}`` (or (name, type) pairs); values
        are given at entry, in that order or by name (dots read as '_'):
        ``with db_query(sql): ...``. ``end_attributes`` (same form) are
        known only later, such as a response's status: give them inside
        the block with ``span.set_end(...)``; the end probe carries them.
        """
        from .span import span_block
        return span_block(self, name, kind=kind, attributes=attributes, end_attributes=end_attributes,
                          probe=probe)

    def event(self, name, attributes=None, *, probe=None, **attr_types):
        """Declare an event probe tied to the current span; returns an Event (``.fire(...)``)."""
        from .event import event
        return event(self, name, attributes, probe=probe, **attr_types)

    def call_event(self, name=None, *, attributes=None, computed=None, probe=None):
        """Decorator: fire an event at each call of the function (attributes as for span())."""
        from .event import call_event_decorator
        return call_event_decorator(self, name, attributes=attributes, computed=computed, probe=probe)

    def schema(self):
        """The schema embedded in this provider's object (docs/abi.md)."""
        return schema_mod.build(self.name, self.probes.values(), self._spans, self._events)

    # --- loading -------------------------------------------------------------

    @property
    def loaded(self):
        return self._loaded

    @property
    def usdt_active(self):
        """True when loaded with real probes; False when loaded as a no-op."""
        return self._backing is not None

    def load(self):
        """Write the provider object, map it, and arm every probe. Returns self."""
        with self._lock:
            if self._loaded:
                raise ProviderStateError(f"provider {self.name!r} is already loaded")
            arch = host_arch()
            if not sys.platform.startswith("linux") or arch is None:
                _warn_noop(f"{sys.platform} on {os.uname().machine if hasattr(os, 'uname') else '?'}")
                self._loaded = True
                return self
            image = self.build_image(arch)
            try:
                backing = loader.load(self.name, image)
            except OSError as exc:
                _warn_noop(str(exc))
                self._loaded = True
                return self
            for probe, site_sym, sem_addr in zip(self.probes.values(), image.site_symbols,
                                                 image.semaphore_addrs):
                # No argtypes: the emit path passes values ctypes maps to the
                # right registers itself, which is twice as fast.
                site = backing.lib[site_sym]
                site.restype = None
                probe._attach_site(Semaphore.from_address(backing.address(sem_addr)), site)
            self._backing = backing
            self._loaded = True
            log.debug("provider %s loaded (%d probes)", self.name, len(self.probes))
            return self

    def build_image(self, arch):
        """The provider's shared object for ``arch`` (an elf.arch.Arch)."""
        sites = [
            ProbeSite(p.name, [arch.arg_spec(i, a.type.size, a.type.signed) for i, a in enumerate(p.args)])
            for p in self.probes.values()
        ]
        return write_provider(self.name, sites, schema_mod.encode(self.schema()), arch)

    def unload(self):
        """Disarm every probe and withdraw the object from USDT tools.

        fire() is a no-op afterwards, also in threads racing with unload().
        """
        with self._lock:
            if not self._loaded:
                raise ProviderStateError(f"provider {self.name!r} is not loaded")
            for probe in self.probes.values():
                probe._detach_site()
            backing, self._backing = self._backing, None
            self._loaded = False
            if backing is not None:
                loader.untrack(backing)
                backing.detach()

    def __enter__(self):
        return self.load()

    def __exit__(self, *exc):
        self.unload()

    def __repr__(self):
        state = "loaded" if self._loaded else "not loaded"
        return f"<Provider {self.name} ({len(self.probes)} probes, {state})>"
