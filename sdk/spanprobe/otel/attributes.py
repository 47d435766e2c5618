"""Attribute values cleaned and bounded as the OpenTelemetry API and SDK do it.

The reference is opentelemetry.attributes (``BoundedAttributes`` and the
cleaning it applies): strings cut to the length limit, sequences made tuples,
mappings copied, other values made ``str`` when their type defines a
``__str__`` or ``__repr__`` of its own and None otherwise (with a warning);
keys that are empty or not ``str`` dropped and counted; when the count limit
is reached, the oldest attribute makes room for the new one. Restated here
because the application path must not depend on the SDK, and none of it may
raise into the application.
"""

import logging
from collections.abc import Mapping, Sequence

log = logging.getLogger("spanprobe.otel")

_PLAIN = (type(None), bool, int, float, bytes)


def _custom_str(value):
    t = type(value)
    return t.__str__ is not object.__str__ or t.__repr__ is not object.__repr__


def clean_value(value, max_length):
    """An attribute value as the SDK keeps it."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, str):
        if max_length is not None and len(value) > max_length:
            log.warning("String attribute value exceeds max length of %d, truncating.", max_length)
            return value[:max_length]
        return value
    if isinstance(value, Sequence):
        return tuple(clean_value(v, max_length) for v in value)
    if isinstance(value, Mapping):
        return clean_mapping(value, max_length)
    log.warning("Invalid type `%s` for attribute value; using its str() if it has one, else None",
                type(value))
    return str(value) if _custom_str(value) else None


#: Values kept as they are when no length limit applies (clean_value() not called for them).
_KEPT = frozenset((str, bool, int, float))
#: The same under a length limit (a str may need cutting).
_SCALARS = frozenset((bool, int, float))
#: The key type kept as it is (a non-empty str).
_STR = frozenset((str,))


def clean_mapping(mapping, max_length):
    """A mapping's items cleaned: bad keys dropped (non-str keys with a str() of their own converted)."""
    if (max_length is None and type(mapping) is dict and len(mapping) > 4 and _STR.issuperset(map(type, mapping))
            and "" not in mapping and _KEPT.issuperset(map(type, mapping.values()))):
        # What the loop below makes of a dict with nothing to clean (what instrumentations pass at
        # a span's start), its types checked without a Python-level step per item (keys first: ""
        # is then compared with str keys only). Up to 4 items the loop is as quick.
        return mapping.copy()
    out = {}
    kept = _KEPT if max_length is None else _PLAIN
    for key, value in mapping.items():
        if type(key) is str and key and type(value) in kept:
            out[key] = value
            continue
        if not key:
            log.warning("invalid attribute key `%s`. must be non-empty string. Dropping key from attributes.", key)
            continue
        if not isinstance(key, str):
            log.warning("Invalid type `%s` for attribute key `%s`, must be a str.", type(key), key)
            if not _custom_str(key):
                continue
            key = str(key)
        out[key] = clean_value(value, max_length)
    return out


class Attributes:
    """A span's, event's or link's attributes under a count and a value-length limit."""

    __slots__ = ("items", "dropped", "max_count", "max_length", "kept")

    def __init__(self, max_count, max_length, initial=None):
        self.items = {}
        self.dropped = 0
        self.max_count = max_count
        self.max_length = max_length
        #: The value types stored as given under this length limit (set_attribute's inline case).
        self.kept = _KEPT if max_length is None else _SCALARS
        if initial:
            self.update(initial)

    def set(self, key, value):
        """set_attribute(): a bad key is dropped and counted."""
        if self.max_count == 0:
            self.dropped += 1
            return
        if not key or not isinstance(key, str):
            log.warning("invalid key `%s`. must be non-empty string. Dropping key from attributes.", key)
            self.dropped += 1
            return
        self._put(key, clean_value(value, self.max_length))

    def update(self, mapping):
        """set_attributes() and attributes given at creation."""
        if type(mapping) is not dict and not isinstance(mapping, Mapping):
            log.warning("Invalid attributes `%s`: not a mapping; dropped", type(mapping))
            return
        if self.max_count == 0:
            self.dropped += len(mapping)
            return
        cleaned = clean_mapping(mapping, self.max_length)
        self.dropped += len(mapping) - len(cleaned)
        if not self.items and (self.max_count is None or len(cleaned) <= self.max_count):
            self.items = cleaned  # what the loop below would make of it
            return
        for key, value in cleaned.items():
            self._put(key, value)

    def _put(self, key, value):
        items = self.items
        if key in items:
            del items[key]
        elif self.max_count is not None and len(items) >= self.max_count:
            del items[next(iter(items))]
            self.dropped += 1
        items[key] = value
