"""The instrumentation config: a TOML file naming functions and what each probe carries.

docs/sdk-spans.md describes it. Each ``[[span]]``, ``[[event]]`` and
``[[probe]]`` entry becomes an Instrumentation call; a mistake is a
DeclarationError naming the entry. Each hook remembers its file, line and
entry (hooks.Origin), so that a target found wrong later, when its module
is imported, is reported where the user wrote it.
"""

import re

from ..errors import DeclarationError
from ..provider import Provider
from .hooks import Instrumentation, Origin

try:
    import tomllib as _toml
except ImportError:  # Python < 3.11
    import tomli as _toml

_SECTIONS = {
    "span": ("function", {"name", "kind", "attributes", "end_attributes", "probe"}),
    "event": ("function", {"name", "attributes", "probe"}),
    "probe": ("function", {"name", "args"}),
}


_ENTRY = re.compile(r"\s*\[\[\s*(%s)\s*\]\]" % "|".join(_SECTIONS))
_FUNCTION = re.compile(r"\s*function\s*=")


def load_config(path):
    """Read a TOML config: returns an Instrumentation on a new (not loaded) Provider."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        config = _toml.loads(data.decode("utf-8"))
    except (_toml.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DeclarationError(f"{path}: {exc}") from None
    return from_config(config, str(path), function_lines(data.decode("utf-8")))


def function_lines(text):
    """{(section, index): line number} of each entry's ``function =`` key, as written in ``[[section]]`` form."""
    lines, counts, current = {}, {}, None
    for number, line in enumerate(text.splitlines(), 1):
        entry = _ENTRY.match(line)
        if entry:
            section = entry.group(1)
            current = (section, counts.get(section, 0))
            counts[section] = current[1] + 1
        elif current and _FUNCTION.match(line):
            lines.setdefault(current, number)
    return lines


def from_config(config, where="config", lines=None):
    unknown = set(config) - {"provider", *_SECTIONS}
    if unknown:
        raise DeclarationError(f"{where}: unknown sections {sorted(unknown)}; "
                               f"expected provider, {', '.join(_SECTIONS)}")
    provider_conf = config.get("provider")
    if not isinstance(provider_conf, dict) or "name" not in provider_conf:
        raise DeclarationError(f'{where}: needs [provider] with name = "..."')
    inst = Instrumentation(Provider(provider_conf["name"]))
    for section, (required, optional) in _SECTIONS.items():
        for i, entry in enumerate(config.get(section, [])):
            here = f"{where}: [[{section}]] #{i + 1}"
            if not isinstance(entry, dict) or required not in entry:
                raise DeclarationError(f"{here}: needs {required} = \"module:Qual.name\"")
            extra = set(entry) - optional - {required}
            if extra:
                raise DeclarationError(f"{here}: unknown keys {sorted(extra)}; "
                                       f"allowed: {required}, {', '.join(sorted(optional))}")
            options = {k: v for k, v in entry.items() if k != required}
            try:
                hook = getattr(inst, section)(entry[required], **options)
            except DeclarationError as exc:
                raise DeclarationError(f"{here}: {exc}") from None
            hook.origin = Origin(where, (lines or {}).get((section, i), 0),
                                 f"[[{section}]] #{i + 1}, {required} = {entry[required]!r}")
    return inst
