"""Fixtures for the hardening tests (helpers are in tests/support/hardening_helpers.py)."""

from __future__ import annotations

import pytest

from tests.support.hardening_helpers import App


@pytest.fixture
def apps():
    """apps(): a new App; every App and child made is killed at the end of the test."""
    made = []

    def make(env=None) -> App:
        made.append(App(env))
        return made[-1]

    yield make
    for app in made:
        app.close()
