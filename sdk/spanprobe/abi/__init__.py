"""The contract with tracers: argument types, the span protocol, the embedded schema (docs/abi.md)."""
