"""Tests of spanprobe.instrument."""
