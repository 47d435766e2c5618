"""One probe: its generated fire(), its semaphore, and the probe site it calls.

The hot path is ``probe.fire(...)`` with nobody listening. It is a function
generated per probe with exactly the probe's parameters (firing.py), so a
wrong argument count fails like any Python call at no cost, and its body is
one truth test of the probe's Semaphore. Only when a tracer has set the
semaphore are the arguments converted and the probe site called.
"""

from typing import Tuple

from ..abi.types import Arg
from . import firing
from .convert import converter
from .semaphore import unattached


def _cell(function, name):
    return function.__closure__[function.__code__.co_freevars.index(name)]


def _unloaded_site(*args):
    """Where emit() lands if it races with unload(): nowhere."""


class Probe:
    """One USDT probe. Create it with Provider.add_probe()."""

    __slots__ = ("provider", "name", "args", "role", "fire", "emit", "enabled", "site_cell",
                 "_gate_cell", "__weakref__")

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
        #: fire() is emit() behind the semaphore test. emit() checks and converts the
        #: arguments and calls the probe site whether or not anyone listens.
        self.fire, self.emit = factory(self.enabled, _unloaded_site, converters)
        self._gate_cell = _cell(self.fire, "_sp_gate")
        #: The closure cell holding the probe site emit() calls. load() and unload()
        #: repoint it: code that calls the site itself reads ``cell_contents`` at each call.
        self.site_cell = _cell(self.emit, "_sp_site")

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
            self.emit(*make_args())

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
