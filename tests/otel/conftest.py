"""Exports of the otel_services scenarios, made once per session (each run starts real services)."""

from __future__ import annotations

import time
from typing import Dict, List

import pytest

from tests.support import otel_services
from tests.support.otlp_receiver import HttpReceiver, ReceivedSpan


def settled(receiver: HttpReceiver, quiet: float = 0.5, timeout: float = 20.0) -> List[ReceivedSpan]:
    """The receiver's spans once no new one has arrived for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        count = receiver.collector.count
        if count == seen:
            break
        seen = count
        time.sleep(quiet)
    return list(receiver.collector.spans)


def sdk_export(front: str) -> List[ReceivedSpan]:
    """The scenario against ``front`` (and back), the official SDK exporting OTLP/HTTP from both."""
    receiver = HttpReceiver()
    try:
        services = otel_services.start_pair(front, otel_services.sdk_env(receiver.endpoint))
        try:
            assert otel_services.run_scenario(services[1].url) == [200, 200, 500]
        finally:
            for service in reversed(services):
                service.stop()
        return settled(receiver)
    finally:
        receiver.stop()


@pytest.fixture(scope="session")
def sdk_exports() -> Dict[str, List[ReceivedSpan]]:
    """front -> its SDK export, made on first use."""
    cache: Dict[str, List[ReceivedSpan]] = {}

    class Exports(dict):
        def __missing__(self, front):
            cache[front] = sdk_export(front)
            return cache[front]

    return Exports()
