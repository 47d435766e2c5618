"""OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, decided as the SDK's samplers decide.

The reference is opentelemetry.sdk.trace.sampling: ``always_on``,
``always_off``, ``traceidratio`` (keep a trace when its low 64 bits are below
``round(ratio * 2**64)``) and their ``parentbased_`` forms (a valid parent's
sampled flag decides; the root sampler decides for roots), default
``parentbased_always_on``. An unknown name or a bad ratio is reported and
replaced as the SDK does (the default sampler; ratio 1.0).

A sampler here is a function ``(parent SpanContext or None, trace_id) -> bool``.
"""

import logging
import os

log = logging.getLogger("spanprobe.otel")

DEFAULT = "parentbased_always_on"
_LOW64 = (1 << 64) - 1


def always_on(parent, trace_id):
    return True


def always_off(parent, trace_id):
    return False


def trace_id_ratio(rate):
    """The TraceIdRatioBased decision for ``rate`` (0..1)."""
    bound = round(rate * (_LOW64 + 1))

    def decide(parent, trace_id):
        return trace_id & _LOW64 < bound
    return decide


def parent_based(root):
    """A valid parent's sampled flag decides; ``root`` decides for a root span."""

    if root is always_on:  # the default: a root is kept without a call
        def decide(parent, trace_id):
            return parent is None or parent.trace_flags.sampled
        return decide

    def decide(parent, trace_id):
        if parent is not None:
            return parent.trace_flags.sampled
        return root(parent, trace_id)
    return decide


def _ratio(environ):
    text = environ.get("OTEL_TRACES_SAMPLER_ARG", "")
    try:
        rate = float(text)
        if 0.0 <= rate <= 1.0:
            return rate
    except ValueError:
        pass
    log.warning("spanprobe: OTEL_TRACES_SAMPLER_ARG=%r is not a ratio in [0, 1]; using 1.0", text)
    return 1.0


def from_env(environ=None):
    """The sampler OTEL_TRACES_SAMPLER(_ARG) of ``environ`` (default os.environ) names."""
    env = os.environ if environ is None else environ
    name = env.get("OTEL_TRACES_SAMPLER", DEFAULT).lower()
    roots = {"always_on": lambda: always_on, "always_off": lambda: always_off,
             "traceidratio": lambda: trace_id_ratio(_ratio(env))}
    base = name[len("parentbased_"):] if name.startswith("parentbased_") else name
    if base not in roots:
        log.warning("spanprobe: OTEL_TRACES_SAMPLER=%r is not a sampler spanprobe knows (%s); using %s",
                    name, ", ".join(sorted(list(roots) + ["parentbased_" + r for r in roots])), DEFAULT)
        name, base = DEFAULT, "always_on"
    root = roots[base]()
    return parent_based(root) if name.startswith("parentbased_") else root
