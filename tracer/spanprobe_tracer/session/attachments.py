"""Attaching a provider in a process: every span and point of its plan, each probe site with its cookie.

The one place that attaches: the session does it for every provider it
traces, and `spanprobe doctor` for its end-to-end check. A span with a
one-hit span probe in the plan has that probe's sites only. Span start sites
carry no cookie (their handler stores the start and emits no record); every
other site gets a fresh cookie bound to the decoder of its records
(decode.Bindings), so a shared handler's records say which probe, of which
provider, in which process, they came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Union

from ..decode import Bindings, PointDecoder, SpanDecoder
from ..discover import ProviderInstance
from ..kernel import AttachError, Module, PointType, ProviderPlan, SpanType, UprobeLink, attach


@dataclass
class Attachment:
    """One provider attached in one process: the links that hold its uprobes, and their cookies."""

    instance: ProviderInstance
    module: Module
    links: List[UprobeLink]
    cookies: List[int]
    sites: int = 0
    #: The cookies of span end sites (or one-hit span sites), and their span types (what span metrics are
    #: counted by).
    span_ends: Dict[int, SpanType] = field(default_factory=dict)

    def close(self) -> None:
        """Detach every uprobe (the cookies stay bound: records already in the ring buffer still decode)."""
        for link in self.links:
            link.close()
        self.links = []


def attach_provider(inst: ProviderInstance, plan: ProviderPlan, module: Module, bindings: Bindings,
                    decoders: Dict[Union[SpanType, PointType], Union[SpanDecoder, PointDecoder]]) -> Attachment:
    """Attach every span and point of ``plan`` in the process of ``inst``, with ``module``'s handlers.

    ``decoders`` are the plan's (decode.DecoderCache). On AttachError nothing
    stays attached or bound, and the error propagates.
    """
    att = Attachment(inst, module, [], [])
    work = []  # (probe, handler, decoder; None for span starts, whose handler emits no record; span if an end)
    for span in plan.spans:
        if span.one is not None:  # the whole span in one hit: its start and end probes stay unattached
            work.append((span.one, span.shape.one_fn, decoders[span], span))
            continue
        work.append((span.start, span.shape.start_fn, None, None))
        work.append((span.end, span.shape.end_fn, decoders[span], span))
    for point in plan.points:
        work.append((point.probe, point.shape.fn, decoders[point], None))
    try:
        for probe, fn, decoder, ended in work:
            for loc in probe.locations:
                cookie = 0
                if decoder is not None:
                    cookie = bindings.bind(decoder, inst.pid)
                    att.cookies.append(cookie)
                    if ended is not None:
                        att.span_ends[cookie] = ended
                att.links.append(attach(inst.attach_path, loc.offset, loc.semaphore, inst.pid,
                                        module.prog_fds[fn], cookie))
                att.sites += 1
    except AttachError:
        att.close()
        bindings.unbind(att.cookies)
        raise
    return att
