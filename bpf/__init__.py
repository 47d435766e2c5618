"""BPF C sources rendered by the tracer."""
