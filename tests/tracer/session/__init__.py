"""Tests of the session, end to end through `spanprobe trace`: processes and providers coming and going."""
