"""Kernel: what runs in the kernel, and how it gets there.

    plan        ProviderPlan: a provider's span and point types, and the ModuleLayout they need;
                Planner: one plan per provider image
    layout      record layouts by argument shape (the offsets decode reads at), CaptureConfig
    render      the C: render_module(layout, id), render_core(config), render_read(location)
    modules     ModuleCache: bcc compiles (core module, one module per layout), Module
    links       attach(): one uprobe in one process with its semaphore and cookie -> UprobeLink
    sampling    Sampler (OTEL_TRACES_SAMPLER[_ARG]), the C of the decision at span start, SamplingBound
    metrics     span metrics in the kernel: the maps, the C at span end, MetricsTable
    ringbuf     RingBuffer: the core module's ring buffer, read in bounded batches
    counters    KernelCounters: what the handlers counted, by Counter
    features    the checks of what this machine offers (doctor and the tests use them)
    privileges  the capabilities tracing needs, checked up front

bcc is imported only when something is compiled (modules, features.check_compile).
"""

from .counters import Counter, KernelCounters
from .layout import CaptureConfig, ModuleLayout
from .links import AttachError, UprobeLink, attach, raise_fd_limit
from .modules import Module, ModuleCache, ModuleError
from .plan import Planner, PointType, ProviderPlan, SpanType
from .render import render_core, render_module
from .ringbuf import RingBuffer

__all__ = ["Counter", "KernelCounters", "CaptureConfig", "ModuleLayout", "AttachError", "UprobeLink", "attach", "raise_fd_limit",
           "Module", "ModuleCache", "ModuleError", "Planner", "PointType", "ProviderPlan", "SpanType",
           "render_core", "render_module", "RingBuffer"]
