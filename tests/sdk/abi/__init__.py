"""Tests of spanprobe.abi."""
