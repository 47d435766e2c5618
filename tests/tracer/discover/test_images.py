"""build_image on a newer SDK's provider: what this tracer knows is traced, the rest skipped and said once."""

from __future__ import annotations

import dataclasses
import io
import logging

import spanprobe
from spanprobe.abi import schema as schema_mod
from spanprobe.elf.arch import host_arch
from spanprobe.elf.reader import read_probes
from spanprobe_tracer.discover import build_image
from spanprobe_tracer.kernel import CaptureConfig, ProviderPlan


def test_probes_of_an_unknown_role_are_skipped_and_reported_once(caplog):
    p = spanprobe.Provider("newer")

    @p.span("handle", attributes={"n": int})
    def handle(n):
        return n

    p.add_probe("plain", x=int)
    p.add_probe("gauge", x=int)
    elf = read_probes(io.BytesIO(p.build_image(host_arch()).data))
    s = p.schema()
    for probe in s["probes"]:  # as a newer SDK might declare them
        probe["role"] = {"handle__span": "span_v9", "gauge": "gauge"}.get(probe["name"], probe["role"])
    elf = dataclasses.replace(elf, schema=schema_mod.encode(s))
    with caplog.at_level(logging.WARNING, logger="spanprobe.tracer"):
        image = build_image(elf, "test")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "2 probe(s) with a role this tracer does not know skipped" in warnings[0]
    assert "gauge (role 'gauge')" in warnings[0] and "handle__span (role 'span_v9')" in warnings[0]
    assert set(image.probes) == {"handle__start", "handle__end", "plain"}
    assert set(image.broken) == {"gauge", "handle__span"}
    plan = ProviderPlan(image, CaptureConfig(), warn=lambda message: warnings.append(message))
    (span,) = plan.spans
    assert (span.start.name, span.end.name, span.one) == ("handle__start", "handle__end", None)
    assert [pt.name for pt in plan.points] == ["newer.plain"]
    assert len(warnings) == 1  # the plan has nothing more to say about them
