"""Discover: where providers are, and what they declare. Nothing here touches BPF.

    procfs   what /proc says about a process (maps, start time, command line, ...), ProcessGone
    argspec  SDT argument specs (``-4@%esi``) parsed into ArgLocations
    images   build_image: a provider object's schema checked against its SDT notes -> ProviderImage
    scan     Scanner: providers (and plain USDT libraries) in a process, files read once and cached

Later stages use the names below; ``procfs`` and ``argspec`` are used as modules.
"""

from .images import ProbeInfo, ProbeLocation, ProviderImage, build_image
from .scan import ProcessScan, ProviderInstance, Scanner, UsdtLibrary

__all__ = ["ProbeInfo", "ProbeLocation", "ProviderImage", "build_image", "ProcessScan", "ProviderInstance",
           "Scanner", "UsdtLibrary"]
