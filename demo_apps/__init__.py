"""Small demo applications instrumented with the spanprobe SDK."""
