"""Spans and events on top of probes: ids and the current span, span definitions, decorators, blocks."""
