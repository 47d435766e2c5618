"""A provider: named probes, declared at run time, then loaded as one shared object.

Declare every probe, then load(): the provider's object is written
(spanprobe.elf), mapped (loader.py), and each probe's fire() pointed at its
probe site and semaphore. unload() points them back at nothing.
spanprobe.Provider adds spans and events on top of these probes.
"""

import logging
import os
import sys
import threading
import warnings

from ..abi import schema as schema_mod
from ..abi.protocol import RESOURCE_ENV, ROLE_PLAIN, VIEW_INFIX, view_of
from ..abi.types import MAX_ARGS, Arg, ArgType
from ..elf.arch import host_arch
from ..elf.writer import ProbeSite, write_provider
from ..errors import DeclarationError, ProviderStateError
from . import loader
from .probe import Probe
from .semaphore import Semaphore

log = logging.getLogger("spanprobe")

MAX_NAME_LENGTH = 64


def _check_name(kind, name):
    if not isinstance(name, str):
        raise DeclarationError(f"{kind} name must be a str, got {type(name).__name__}")
    if not schema_mod.is_identifier(name):
        raise DeclarationError(
            f"{kind} name {name!r} is not a C identifier "
            "(ASCII letters, digits and '_', not starting with a digit)")
    if len(name) > MAX_NAME_LENGTH:
        raise DeclarationError(f"{kind} name {name!r} is {len(name)} characters; the limit is {MAX_NAME_LENGTH}")
    if kind == "probe" and view_of(name):
        raise DeclarationError(
            f"probe name {name!r} ends like a view's (<probe>{VIEW_INFIX}<N>, docs/abi.md \"Views\"); "
            "choose another name")


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


class NoopWarning:
    """Says once per process that providers load as no-ops here; ``issued`` tells whether it has."""

    def __init__(self):
        self.issued = False
        self._lock = threading.Lock()

    def warn(self, reason):
        with self._lock:
            if self.issued:
                return
            self.issued = True
        warnings.warn(f"spanprobe: USDT probes are unavailable here ({reason}); "
                      "providers load as no-ops and the application runs unchanged",
                      RuntimeWarning, stacklevel=3)


NOOP_WARNING = NoopWarning()


class ProbeProvider:
    """A named set of probes, backed by one shared object once loaded.

    Declare every probe, then load(); probes are visible to USDT tools from
    then until unload(). Usable as a context manager.
    """

    def __init__(self, name):
        _check_name("provider", name)
        self.name = name
        self.probes = {}
        self._schema_spans = []
        self._schema_events = []
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
        return self.declare(name, _parse_args(args, named_args), ROLE_PLAIN)

    def declare(self, name, args, role, converters=None):
        """Declare a probe with a role of the span protocol (docs/abi.md) and return it.

        ``args`` are Args, a span or event probe's fixed ones first
        (spanprobe.abi.protocol); ``converters`` replace the checked
        conversion of each argument (spanprobe.probes.convert).
        """
        with self._lock:
            self._check_not_loaded("declare probes")
            _check_name("probe", name)
            if name in self.probes:
                raise DeclarationError(f"provider {self.name!r} already has a probe named {name!r}")
            _check_args(name, args)
            probe = Probe(self, name, args, role, converters)
            self.probes[name] = probe
            return probe

    def add_schema_span(self, entry):
        """Add a span entry (a dict, docs/abi.md "Schema entries") to the schema's ``spans``."""
        with self._lock:
            self._check_not_loaded("describe spans")
            self._schema_spans.append(entry)

    def add_schema_event(self, entry):
        """Add an event entry (``{"name": ..., "probe": ...}``) to the schema's ``events``."""
        with self._lock:
            self._check_not_loaded("describe events")
            self._schema_events.append(entry)

    @property
    def schema_spans(self):
        """The schema's span entries so far (a copy)."""
        return list(self._schema_spans)

    @property
    def schema_events(self):
        """The schema's event entries so far (a copy)."""
        return list(self._schema_events)

    def schema(self):
        """The schema embedded in this provider's object (docs/abi.md), with the resource variables of now."""
        environment = {k: os.environ[k] for k in RESOURCE_ENV if k in os.environ}
        return schema_mod.build(self.name, self.probes.values(), self._schema_spans, self._schema_events,
                                environment)

    def _check_not_loaded(self, what):
        if self._loaded:
            raise ProviderStateError(
                f"provider {self.name!r} is loaded; {what} before load() or after unload()")

    # --- loading -------------------------------------------------------------

    @property
    def loaded(self):
        return self._loaded

    @property
    def usdt_active(self):
        """True when loaded with real probes; False when loaded as a no-op."""
        return self._backing is not None

    @property
    def backing(self):
        """The loaded object (a loader.Backing: its memfd or file), or None."""
        return self._backing

    def load(self):
        """Write the provider object, map it, and arm every probe. Returns self."""
        with self._lock:
            if self._loaded:
                raise ProviderStateError(f"provider {self.name!r} is already loaded")
            arch = host_arch()
            if not sys.platform.startswith("linux") or arch is None:
                NOOP_WARNING.warn(f"{sys.platform} on {os.uname().machine if hasattr(os, 'uname') else '?'}")
                self._loaded = True
                return self
            image = self.build_image(arch)
            try:
                backing = loader.load(self.name, image)
            except OSError as exc:
                NOOP_WARNING.warn(str(exc))
                self._loaded = True
                return self
            for probe, site_sym, sem_addr in zip(self.probes.values(), image.site_symbols,
                                                 image.semaphore_addrs):
                # No argtypes: the emit path passes values ctypes maps to the
                # right registers itself, which is twice as fast.
                site = backing.lib[site_sym]
                site.restype = None
                probe.attach_site(Semaphore.from_address(backing.address(sem_addr)), site)
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
                probe.detach_site()
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
