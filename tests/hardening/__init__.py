"""Hardening: faults, hostile input, load, privileges, fuzzing (docs/hardening.md)."""
