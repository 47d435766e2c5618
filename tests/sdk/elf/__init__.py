"""Tests of spanprobe.elf."""
