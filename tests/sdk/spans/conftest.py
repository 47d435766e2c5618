"""The provider every span test declares on (not loaded: spanprobe.testing.Recorder stands in)."""

import pytest

import spanprobe


@pytest.fixture
def provider():
    return spanprobe.Provider("spantest")
