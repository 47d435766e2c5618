"""What to attach for one provider: its span and point types, and the module layout they need.

A provider's schema names its spans (a start probe and an end probe each,
and from SDKs that have it a one-hit span probe), its events and its plain
probes. The plan pairs them up, picks a span's one-hit probe where it has
one (one uprobe hit a span instead of two; then its start and end probes
are not attached), checks each against
the span protocol's fixed arguments (spanprobe.abi.protocol), and gives
every span type and point type the shape its handlers are rendered for.
Spans of one shape share handlers, so a provider with twenty spans of three
shapes compiles three handler pairs, and another provider, or another
process, with the same shapes reuses the same module (ModuleLayout.key).

A plan depends only on the provider image and the capture config, so the
Planner makes one per image and keeps it while the image lives.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from spanprobe.abi.protocol import (DEFAULT_KIND, FIXED_ARGS, PAYLOAD_STR, ROLE_EVENT, ROLE_OTEL_SPAN, ROLE_PLAIN,
                                    ROLE_SPAN, ROLE_SPAN_END, ROLE_SPAN_START)

from ..discover import ProbeInfo, ProviderImage
from .layout import CaptureConfig, ModuleLayout, PointShape, SpanShape, probe_shape
from .metrics import http_fields

log = logging.getLogger("spanprobe.tracer")

#: The types of the span protocol's fixed leading arguments, by probe role (docs/abi.md).
FIXED_TYPES = {role: tuple(t for _, t in args) for role, args in FIXED_ARGS.items()}


def code_attributes(code) -> Dict[str, object]:
    """Schema "code" -> current semantic-convention code.* attributes."""
    if not isinstance(code, dict):
        return {}
    out: Dict[str, object] = {}
    if isinstance(code.get("function"), str):
        out["code.function.name"] = code["function"]
    if isinstance(code.get("filepath"), str):
        out["code.file.path"] = code["filepath"]
    if isinstance(code.get("lineno"), int) and not isinstance(code.get("lineno"), bool):
        out["code.line.number"] = code["lineno"]
    return out


@dataclass(eq=False)
class SpanType:
    """A span of one provider: what the schema says about it, and its shape."""

    name: str
    kind: str
    provider: str
    code: Optional[dict]
    start: ProbeInfo
    end: ProbeInfo
    #: The one-hit span probe, when the span has one and the plan uses it: then it alone is attached.
    one: Optional[ProbeInfo] = None
    shape: Optional[SpanShape] = None
    #: The schema's "code" as semantic-convention attributes (code.function.name, ...).
    code_attributes: Dict[str, object] = field(init=False)

    def __post_init__(self):
        self.code_attributes = code_attributes(self.code)


@dataclass(eq=False)
class PointType:
    """An event probe (role "event"), a plain probe (role "plain") or an otel_span probe of one provider."""

    name: str            # event name, or "<provider>.<probe>" for plain and otel_span probes
    role: str
    provider: str
    probe: ProbeInfo
    shape: Optional[PointShape] = None


def one_hit_allowed(config: CaptureConfig) -> bool:
    """May spans be traced by their one-hit span probe under ``config``? Not when it asks for the pair
    (--paired-spans), nor with a sampler that remembers each trace's decision (kernel.sampling): the first
    span of a trace to *start* on the host decides there, and the span probe reports a span only when it
    ends, children before their parents; nor when it captures strings longer than the payload carries
    (a cut is seen by the byte past ``string_max``)."""
    return config.one_hit and not config.sampler.stateful and config.string_max < PAYLOAD_STR


def _types(probe: ProbeInfo) -> tuple:
    return tuple(t for _, t in probe.args)


def _follows(probe: ProbeInfo, role: str) -> bool:
    """Do ``probe``'s leading arguments have the types the protocol fixes for ``role``?"""
    fixed = FIXED_TYPES[role]
    return _types(probe)[:len(fixed)] == fixed


class ProviderPlan:
    """How one provider is traced: its span and point types, and the module layout they need."""

    def __init__(self, image: ProviderImage, config: CaptureConfig, warn: Callable[[str], None] = log.warning):
        self.config = config
        self.provider = image.provider
        self.spans: List[SpanType] = []
        self.points: List[PointType] = []
        self._pair(image, warn)
        span_shapes: List[tuple] = []
        point_shapes: List[tuple] = []
        keys = {s: (probe_shape(s.start), probe_shape(s.end),
                    http_fields(s.kind, s.start.args, s.end.args) if config.metrics else None,
                    s.one.specs[0] if s.one else None) for s in self.spans}
        for s in self.spans:
            if keys[s] not in span_shapes:
                span_shapes.append(keys[s])
        for p in self.points:
            key = (p.role, probe_shape(p.probe))
            if key not in point_shapes:
                point_shapes.append(key)
        self.layout = ModuleLayout(image.machine, config, span_shapes, point_shapes)
        for s in self.spans:
            s.shape = self.layout.spans[span_shapes.index(keys[s])]
        for p in self.points:
            p.shape = self.layout.points[point_shapes.index((p.role, probe_shape(p.probe)))]

    def _pair(self, image: ProviderImage, warn) -> None:
        probes = image.probes
        used = set()
        for entry in image.schema.get("spans", []):
            name = entry.get("name") or entry.get("start")
            start, end = probes.get(entry.get("start")), probes.get(entry.get("end"))
            where = "provider %s span %r" % (self.provider, name)
            if start is None or end is None:
                warn("%s: its start or end probe cannot be traced; span skipped" % where)
                continue
            if start.name in used or end.name in used or start.name == end.name:
                warn("%s: shares a probe with another span; span skipped" % where)
                continue
            if not (_follows(start, ROLE_SPAN_START) and _follows(end, ROLE_SPAN_END)):
                warn("%s: its probes do not follow the span protocol (docs/abi.md); span skipped" % where)
                continue
            used.update((start.name, end.name))
            one = probes.get(entry.get("span")) if one_hit_allowed(self.config) else None
            if one is not None and (one.role != ROLE_SPAN or _types(one) != FIXED_TYPES[ROLE_SPAN]):
                warn("%s: its span probe %s is not one bytes value; its start and end probes are traced instead"
                     % (where, one.name))
                one = None
            if one is not None:
                used.add(one.name)
            self.spans.append(SpanType(str(name), entry.get("kind", DEFAULT_KIND), self.provider,
                                       entry.get("code"), start, end, one))
        event_names = {}
        for entry in image.schema.get("events", []):
            event_names.setdefault(entry.get("probe"), entry.get("name") or entry.get("probe"))
        for probe in probes.values():
            if probe.name in used:
                continue
            if probe.role == ROLE_EVENT:
                if not _follows(probe, ROLE_EVENT):
                    warn("provider %s event probe %s: arguments do not follow the event protocol; skipped"
                         % (self.provider, probe.name))
                    continue
                name = event_names.get(probe.name, probe.name)
            elif probe.role == ROLE_PLAIN:
                name = "%s.%s" % (self.provider, probe.name)
            elif probe.role == ROLE_OTEL_SPAN:
                if _types(probe) != FIXED_TYPES[ROLE_OTEL_SPAN]:
                    warn("provider %s otel_span probe %s: its argument is not one bytes value; skipped"
                         % (self.provider, probe.name))
                    continue
                name = "%s.%s" % (self.provider, probe.name)
            else:
                continue  # a span_start/span_end probe no span uses: nothing to pair it with
            self.points.append(PointType(str(name), probe.role, self.provider, probe))

    @property
    def empty(self) -> bool:
        return not (self.spans or self.points)


class Planner:
    """Plans under one capture config, one per provider image, kept as long as the image lives.

    Images are shared by every process that maps the same file, so forty
    workers of one application are planned once.
    """

    def __init__(self, config: CaptureConfig, warn: Callable[[str], None] = log.warning):
        self.config = config
        self._warn = warn
        self._plans: "weakref.WeakKeyDictionary[ProviderImage, ProviderPlan]" = weakref.WeakKeyDictionary()

    def plan_for(self, image: ProviderImage) -> ProviderPlan:
        plan = self._plans.get(image)
        if plan is None:
            plan = self._plans[image] = ProviderPlan(image, self.config, self._warn)
        return plan
