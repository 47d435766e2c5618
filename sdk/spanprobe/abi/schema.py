"""The machine-readable schema embedded in every provider object.

The schema is UTF-8 JSON in an ELF note (owner ``spanprobe``, type 1) in the
section ``.note.spanprobe``. It is what lets a tracer attach with no
configuration: it names each probe's arguments and their types, and which
probes start and end spans. docs/abi.md specifies it; this module is the one
place that writes and validates it, for the SDK and the tracer alike.

Versioning: ``version`` is an integer. A reader accepts the versions it knows
and refuses others with a SchemaError; additive, ignorable fields do not bump
the version.
"""

import json
import re

from ..errors import SchemaError
from .protocol import (DEFAULT_KIND, FIXED_ARGS, FIXED_ONLY_ROLES, PROBE_ROLES, RESOURCE_ENV, ROLE_EVENT,
                       ROLE_OTEL_SPAN, ROLE_PLAIN, ROLE_SPAN, ROLE_SPAN_END, ROLE_SPAN_START, SPAN_KINDS)
from .types import MAX_ARGS, ArgType

SCHEMA_FORMAT = "spanprobe.schema"
SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (1,)
#: A schema larger than this is refused unread: it cannot be one the SDK wrote.
MAX_SCHEMA_BYTES = 1 << 20

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z", re.ASCII)


def is_identifier(name):
    return isinstance(name, str) and bool(_IDENT.match(name))


def build(provider, probes, spans=(), events=(), environment=None):
    """The schema of a provider as a dict.

    ``probes`` yields objects with ``name``, ``role`` and ``args`` (a sequence
    of objects with ``name`` and ``type``); ``spans`` and ``events`` are
    already schema dicts; ``environment`` the application's RESOURCE_ENV
    variables that are set.
    """
    schema = {
        "format": SCHEMA_FORMAT,
        "version": SCHEMA_VERSION,
        "provider": provider,
        "probes": [
            {
                "name": p.name,
                "role": p.role,
                "args": [{"name": a.name, "type": a.type.value} for a in p.args],
            }
            for p in probes
        ],
        "spans": list(spans),
        "events": list(events),
    }
    if environment:
        schema["environment"] = dict(environment)
    return schema


def encode(schema):
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode(data, unknown_roles=None):
    """Parse and validate schema bytes, returning the dict. Raises SchemaError.

    ``unknown_roles``: None for the strict check (a probe role this version
    does not know is an error). A tracer reading another process's schema,
    perhaps a newer SDK's, passes a dict instead: probes with a role it does
    not know are taken out before validation (skip_unknown_roles) and listed
    there, name -> role, and the rest is validated as strictly as ever.
    """
    if len(data) > MAX_SCHEMA_BYTES:
        raise SchemaError(f"schema is {len(data)} bytes, over the {MAX_SCHEMA_BYTES}-byte limit")
    try:
        schema = json.loads(data.decode("utf-8"))
        # JSON escapes can make lone surrogates ("\ud800"), which no UTF-8 encoder
        # (OTLP, JSON lines) accepts: one such name would fail every export batch it is in.
        encode(schema)
    except UnicodeDecodeError as exc:
        raise SchemaError(f"schema is not UTF-8: {exc}") from None
    except UnicodeEncodeError as exc:
        raise SchemaError(f"schema has a string that is not valid Unicode: {exc}") from None
    except ValueError as exc:
        raise SchemaError(f"schema is not valid JSON: {exc}") from None
    except RecursionError:
        raise SchemaError("schema nests too deeply to be one") from None
    if unknown_roles is not None:
        unknown_roles.update(skip_unknown_roles(schema))
    validate(schema)
    return schema


def skip_unknown_roles(schema):
    """Take the probes whose role this version does not know out of ``schema`` (in place); {name: role}.

    Forward compatibility (docs/abi.md): a span entry whose one-hit ``span``
    probe is taken out loses that key and keeps its start/end pair; any other
    reference to such a probe is still an error when the schema is validated.
    A schema too malformed to tell is left for validate() to reject.
    """
    probes = schema.get("probes") if isinstance(schema, dict) else None
    if not isinstance(probes, list):
        return {}
    skipped = {p["name"]: p["role"] for p in probes
               if isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("role"), str)
               and p["role"] not in PROBE_ROLES}
    if skipped:
        schema["probes"] = [p for p in probes if not (isinstance(p, dict) and p.get("name") in skipped
                                                      and p.get("role") not in PROBE_ROLES)]
        for span in schema.get("spans", []) if isinstance(schema.get("spans"), list) else ():
            if isinstance(span, dict) and isinstance(span.get("span"), str) and span["span"] in skipped:
                del span["span"]
    return skipped


def _require(condition, message):
    if not condition:
        raise SchemaError(message)


def validate(schema):
    """Check structure, version and internal consistency. Raises SchemaError."""
    _require(isinstance(schema, dict), "schema is not a JSON object")
    _require(schema.get("format") == SCHEMA_FORMAT,
             f"schema format is {schema.get('format')!r}, expected {SCHEMA_FORMAT!r}")
    version = schema.get("version")
    _require(type(version) is int and version in SUPPORTED_VERSIONS,
             f"schema version {version!r} is not supported (this reader knows {SUPPORTED_VERSIONS})")
    _require(is_identifier(schema.get("provider")),
             f"schema provider name {schema.get('provider')!r} is not a C identifier")
    probes = schema.get("probes")
    _require(isinstance(probes, list), "schema 'probes' is not a list")
    roles = {}
    types = {t.value for t in ArgType}
    for probe in probes:
        _require(isinstance(probe, dict), "a schema probe entry is not an object")
        name = probe.get("name")
        _require(is_identifier(name), f"probe name {name!r} is not a C identifier")
        _require(name not in roles, f"probe {name!r} is declared twice")
        role = roles[name] = probe.get("role")
        _require(role in PROBE_ROLES, f"probe {name!r} has unknown role {role!r}")
        args = probe.get("args")
        _require(isinstance(args, list) and len(args) <= MAX_ARGS,
                 f"probe {name!r}: 'args' must be a list of at most {MAX_ARGS}")
        for arg in args:
            _require(isinstance(arg, dict) and isinstance(arg.get("name"), str)
                     and isinstance(arg.get("type"), str) and arg["type"] in types,
                     f"probe {name!r}: bad argument entry {arg!r}")
        fixed = FIXED_ARGS.get(role, ())
        layout = [(a["name"], a["type"]) for a in args[:len(fixed)]]
        _require(layout == list(fixed),
                 f"probe {name!r}: a {role} probe must start with "
                 f"{', '.join(f'{n}:{t}' for n, t in fixed)}; it starts with "
                 f"{', '.join(f'{n}:{t}' for n, t in layout) or 'nothing'}")
        _require(role not in FIXED_ONLY_ROLES or len(args) == len(fixed),
                 f"probe {name!r}: a {role} probe has no arguments after {', '.join(n for n, _ in fixed)}")
    environment = schema.get("environment", {})
    _require(isinstance(environment, dict) and all(k in RESOURCE_ENV and isinstance(v, str)
                                                   for k, v in environment.items()),
             f"schema 'environment' must map some of {RESOURCE_ENV} to strings")
    for key in ("spans", "events"):
        _require(isinstance(schema.get(key, []), list), f"schema {key!r} is not a list")
    used = {}
    for span in schema.get("spans", []):
        _require(isinstance(span, dict), "a schema span entry is not an object")
        what = f"span {span.get('name')!r}"
        _require(isinstance(span.get("name"), str) and span["name"], f"{what}: name must be a non-empty string")
        # "span" (the one-hit probe) is optional: hand-declared spans and older SDKs have none.
        for end, role in (("start", ROLE_SPAN_START), ("end", ROLE_SPAN_END), ("span", ROLE_SPAN)):
            if end == "span" and end not in span:
                continue
            probe = span.get(end)
            _require(isinstance(probe, str) and probe in roles, f"{what}: {end} probe {probe!r} is not declared")
            _require(roles[probe] == role, f"{what}: {end} probe {probe!r} has role {roles[probe]!r}, not {role!r}")
            _require(probe not in used, f"{what}: probe {probe!r} already belongs to {used.get(probe)}")
            used[probe] = what
        _require(span.get("kind", DEFAULT_KIND) in SPAN_KINDS, f"{what}: unknown kind {span.get('kind')!r}")
        code = span.get("code", {})
        _require(isinstance(code, dict)
                 and all(isinstance(code.get(k, ""), str) for k in ("function", "filepath"))
                 and isinstance(code.get("lineno", 0), int) and 0 <= code.get("lineno", 0) < 1 << 31,
                 f"{what}: bad code entry {code!r}")
    for event in schema.get("events", []):
        _require(isinstance(event, dict) and isinstance(event.get("name"), str)
                 and isinstance(event.get("probe"), str) and event["probe"] in roles,
                 f"event {event!r} names a probe that is not declared")
        _require(roles[event["probe"]] == ROLE_EVENT,
                 f"event {event['name']!r}: probe {event['probe']!r} has role {roles[event['probe']]!r}, not 'event'")
        _require(event["probe"] not in used, f"event {event['name']!r}: probe {event['probe']!r} is used twice")
        used[event["probe"]] = f"event {event['name']!r}"
    orphans = sorted(n for n, r in roles.items() if r not in (ROLE_PLAIN, ROLE_OTEL_SPAN) and n not in used)
    _require(not orphans, f"probes {orphans} have a span or event role but no span or event entry")
