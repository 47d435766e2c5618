"""spanprobe tests: packages mirroring the source tree; shared helpers in tests.support."""
