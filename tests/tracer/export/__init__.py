"""Tests of export: console, JSON lines, OTLP, the export pipeline."""
