"""Tests of spanprobe.spans."""
