"""The provider object: per-architecture probe sites, the ELF writer, and the one ELF reader."""
