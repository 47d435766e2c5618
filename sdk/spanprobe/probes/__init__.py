"""Declaring, loading and firing probes: providers, generated fire(), conversion, semaphores, the loader."""
