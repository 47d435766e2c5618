"""Exceptions raised by the SDK. Each names the provider, probe or argument at fault."""


class SpanprobeError(Exception):
    """Base class of every error the SDK raises on purpose."""


class DeclarationError(SpanprobeError, ValueError):
    """A provider, probe or argument was declared in a way the ABI cannot carry."""


class ProviderStateError(SpanprobeError, RuntimeError):
    """An operation that the provider's current state (loaded or not) forbids."""


class ProbeArgumentError(SpanprobeError, TypeError, ValueError):
    """A value passed to ``fire()`` does not fit the argument's declared type.

    Subclasses both TypeError and ValueError so that callers catching either of
    Python's usual argument errors catch it too.
    """


class SchemaError(SpanprobeError, ValueError):
    """An embedded schema is malformed, lies about its probes, or has an unknown version."""
