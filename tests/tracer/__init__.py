"""Tests of the tracer (tracer/spanprobe_tracer), one package per stage."""
