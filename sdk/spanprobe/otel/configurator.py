"""``OTEL_PYTHON_CONFIGURATOR=spanprobe``: spanprobe's provider under ``opentelemetry-instrument``, distro or not.

opentelemetry-instrument runs one configurator (entry point group
``opentelemetry_configurator``): the one OTEL_PYTHON_CONFIGURATOR names, else
the first it finds. opentelemetry-distro's installs the SDK's TracerProvider,
which then wins over OTEL_PYTHON_TRACER_PROVIDER; naming this one installs
spanprobe's instead. Found first without being named, this one hands over to
the next configurator, so that installing spanprobe changes nothing for
applications that did not ask for it.
"""

import logging
import os
from importlib.metadata import entry_points

from opentelemetry import trace

from .tracer import TracerProvider

log = logging.getLogger("spanprobe.otel")

NAME = "spanprobe"
GROUP = "opentelemetry_configurator"


def _others():
    eps = entry_points()
    found = eps.select(group=GROUP) if hasattr(eps, "select") else eps.get(GROUP, ())
    return [ep for ep in found if ep.name != NAME]


class Configurator:
    """Sets spanprobe.otel.TracerProvider as the global tracer provider when named (traces only: no
    meter or logger provider is configured); otherwise runs the next configurator."""

    def configure(self, **kwargs):
        if os.environ.get("OTEL_PYTHON_CONFIGURATOR") == NAME:
            trace.set_tracer_provider(TracerProvider())
            return
        for ep in _others()[:1]:
            log.debug("spanprobe: not named by OTEL_PYTHON_CONFIGURATOR; running configurator %s", ep.name)
            ep.load()().configure(**kwargs)
