"""spanprobe: stable, near-zero-cost USDT probes for Python applications.

    provider = spanprobe.Provider("simplehttp")
    transfer = provider.add_probe("file_transfer", client=str, path=str, size="u32")
    provider.load()
    transfer.fire(client, path, size)   # ~a semaphore read when nobody listens
"""

from .abi.types import Arg, ArgType
from .errors import (DeclarationError, ProbeArgumentError, ProviderStateError, SchemaError,
                     SpanprobeError)
from .probes.probe import Probe
from .provider import Provider
from .spans.propagation import continue_trace, inject
from .spans.status import record_exception, set_status

__version__ = "0.1.0"

__all__ = [
    "Arg", "ArgType", "DeclarationError", "Probe", "ProbeArgumentError", "Provider",
    "ProviderStateError", "SchemaError", "SpanprobeError", "__version__", "continue_trace", "inject",
    "record_exception", "set_status",
]
