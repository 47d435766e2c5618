"""One probe: its generated fire(), its semaphore, and the probe site it calls.

The hot path is ``probe.fire(...)`` with nobody listening. It is a function
generated per probe with exactly the probe's parameters (firing.py), so a
wrong argument count fails like any Python call at no cost, and its body is
one truth test of the probe's Semaphore. Only when a tracer has set the
semaphore are the arguments converted and the probe site called.

A value that does not fit its argument (docs/sdk.md) never raises, traced
or not: a plain probe has no flags to mark it, so the hit is skipped,
counted in ``conversion_failures`` and logged once per probe.
"""

import logging
from typing import Tuple

from ..abi.types import Arg
from ..errors import ProbeArgumentError
from . import firing
from .convert import converter
from .semaphore import unattached

log = logging.getLogger("spanprobe")


def _cell(function, name):
    return function.__closure__[function.__code__.co_freevars.index(name)]


def _unloaded_site(*args):
    """Where emit() lands if it races with unload(): nowhere."""


class Probe:
    """One USDT probe. Create it with Provider.add_probe()."""

    __slots__ = ("provider", "name", "args", "role", "fire", "emit", "enabled", "site_cell",
                 "conversion_failures", "_gate_cell", "__weakref__")

    def __init__(self, provider, name, args, role, converters=None):
        self.provider = provider
        self.name = name
        self.args: Tuple[Arg, ...] = tuple(args)
        self.role = role
        converters = tuple(converters or (
            converter(a.type, f"probe {provider.name}:{name} argument {a.name!r}") for a in self.args))
        #: Hits skipped because a value did not fit its argument (the first one is logged).
        self.conversion_failures = 0
        factory = firing.generate(self.qualname, self.args)
        #: The probe's Semaphore: truthy while a tracer is attached. Read it
        #: where you test it; after unload() an old one reads 0 forever.
        self.enabled = unattached()
        #: fire() is emit() behind the semaphore test. emit() checks and converts the
        #: arguments and calls the probe site whether or not anyone listens.
        self.fire, self.emit = factory(self.enabled, _unloaded_site, self._careful(converters))
        self._gate_cell = _cell(self.fire, "_sp_gate")
        #: The closure cell holding the probe site emit() calls. load() and unload()
        #: repoint it: code that calls the site itself reads ``cell_contents`` at each call.
        self.site_cell = _cell(self.emit, "_sp_site")

    def _careful(self, converters):
        """careful(site, *values): convert with the checked converters and call site; skip a bad hit."""

        def careful(site, *values):
            try:
                out = [convert(v) for convert, v in zip(converters, values)]
            except Exception as exc:  # a ProbeArgumentError, or a lazy value that raised
                return self._skip(exc)
            site(*out)

        return careful

    def _skip(self, exc):
        self.conversion_failures += 1
        if self.conversion_failures == 1:
            log.warning("spanprobe: %s; hit skipped (a plain probe cannot mark a value as failed; "
                        "later failures of this probe are counted in probe.conversion_failures, "
                        "not logged)", exc if isinstance(exc, ProbeArgumentError) else
                        f"probe {self.qualname}: a lazy value raised {exc!r}")

    @property
    def qualname(self):
        return f"{self.provider.name}:{self.name}"

    @property
    def site(self):
        """The probe site function as of now (a no-op while the provider is not loaded)."""
        return self.site_cell.cell_contents

    def fire_lazy(self, make_args):
        """Fire with the tuple ``make_args()`` returns, calling it only when enabled."""
        if self.enabled:
            try:
                args = make_args()
            except Exception as exc:
                return self._skip(exc)
            self.emit(*args)

    def attach_site(self, semaphore, site):
        """Point fire() at a probe site and the semaphore that gates it (site first: the gate opens onto it)."""
        self.site_cell.cell_contents = site
        self._gate_cell.cell_contents = semaphore
        self.enabled = semaphore

    def detach_site(self):
        """Point fire() back at nothing: a semaphore no tracer can reach, a site that does nothing."""
        self.attach_site(unattached(), _unloaded_site)

    def __repr__(self):
        args = ", ".join(f"{a.name}: {a.type.value}" for a in self.args)
        return f"<Probe {self.qualname}({args}) enabled={self.enabled}>"
