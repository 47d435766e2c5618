"""Tests of spanprobe.compat."""
