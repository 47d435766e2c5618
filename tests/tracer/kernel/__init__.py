"""Tests of kernel: plans, rendered C, modules and features."""
