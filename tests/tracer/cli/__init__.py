"""Tests of the `spanprobe` command: usage errors, doctor, --ebpf."""
