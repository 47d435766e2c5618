"""Exports of the otel_services scenarios, made once per session (each run starts real services)."""

from __future__ import annotations

from typing import Dict, List

import pytest

from tests.support.otel_services import sdk_export
from tests.support.otlp_receiver import ReceivedSpan


@pytest.fixture(scope="session")
def sdk_exports() -> Dict[str, List[ReceivedSpan]]:
    """front -> its SDK export, made on first use."""

    class Exports(Dict[str, List[ReceivedSpan]]):
        def __missing__(self, front: str) -> List[ReceivedSpan]:
            self[front] = sdk_export(front)
            return self[front]

    return Exports()
