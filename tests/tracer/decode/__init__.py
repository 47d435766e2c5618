"""Tests of decode: records read from ring-buffer bytes."""
