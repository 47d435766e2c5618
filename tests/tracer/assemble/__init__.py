"""Tests of assemble: records to OpenTelemetry spans and resources."""
