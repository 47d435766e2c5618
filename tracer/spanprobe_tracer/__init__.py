"""spanprobe tracer: attaches to spanprobe USDT probes with bcc and exports OpenTelemetry spans."""
