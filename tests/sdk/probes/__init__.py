"""Tests of spanprobe.probes."""
