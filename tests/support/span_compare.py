"""Two OTLP exports of the same scenario compared span by span, with a readable diff.

The reference run is the official SDK's, the other spanprobe's: each span is
matched by its place in its trace's tree (the traces in the order their roots
started, each span's children in the order they started, the span's name
along the path), then compared field by field. Only what is inherently per
run may differ:

* ids and times (trace_id, span_id, parent_span_id, start/end/event times):
  the tree's shape is compared instead, so a wrong or missing parent link
  shows as a span at another place;
* local TCP ports, which the system picks anew each run: the integer port
  attributes in PORT_KEYS are compared as "an int", and "127.0.0.1:PORT" inside
  any string value (http.url, http.host, net.host.name...) as "127.0.0.1:<port>".

Everything else must be equal: name, kind, flags, trace_state, attributes
(keys and values), events (names, attributes, exception.stacktrace included),
links, dropped counts, status code and message, instrumentation scope (name,
version, schema_url) and the resource's service.name.
"""

from __future__ import annotations

import re
from typing import Dict, List, Sequence, Tuple

from tests.support.otlp_receiver import ReceivedSpan, attributes

#: Integer attributes holding a port the system chose for this run (server or client side).
PORT_KEYS = frozenset({"net.host.port", "net.peer.port", "server.port", "client.port", "network.peer.port",
                       "network.local.port"})
LOOPBACK_PORT = re.compile(r"127\.0\.0\.1:\d+")
ANY_PORT = "<port>"


def _value(key: str, value):
    if key in PORT_KEYS and isinstance(value, int):
        return ANY_PORT
    if isinstance(value, str):
        return LOOPBACK_PORT.sub("127.0.0.1:" + ANY_PORT, value)
    if isinstance(value, list):
        return [_value(key, v) for v in value]
    return value


def _attributes(kvs) -> Dict[str, object]:
    return {key: _value(key, value) for key, value in attributes(kvs).items()}


def canonical(span: ReceivedSpan) -> Dict[str, object]:
    """The fields of ``span`` that must match, per-run values replaced (see the module doc)."""
    s = span.span
    return {
        "name": s.name,
        "kind": s.kind,
        "flags": s.flags,
        "trace_state": s.trace_state,
        "attributes": _attributes(s.attributes),
        "dropped_attributes_count": s.dropped_attributes_count,
        "events": [{"name": e.name, "attributes": _attributes(e.attributes),
                    "dropped_attributes_count": e.dropped_attributes_count} for e in s.events],
        "dropped_events_count": s.dropped_events_count,
        "links": [{"attributes": _attributes(link.attributes), "flags": link.flags,
                   "trace_state": link.trace_state} for link in s.links],
        "dropped_links_count": s.dropped_links_count,
        "status": {"code": s.status.code, "message": s.status.message},
        "scope": {"name": span.scope, "version": span.scope_version, "schema_url": span.schema_url},
        "service.name": span.resource.get("service.name"),
    }


def tree(spans: Sequence[ReceivedSpan]) -> List[Tuple[str, ReceivedSpan]]:
    """Every span with its place: "trace N / NAME#i / NAME#j ...", the index counting the siblings
    (roots of one trace, or children of one parent) that started before it. A span whose parent
    is not among ``spans`` is a root of its trace."""
    ids = {(s.trace_id, s.span_id) for s in spans}
    children: Dict[Tuple[str, str], List[ReceivedSpan]] = {}
    roots: Dict[str, List[ReceivedSpan]] = {}
    for s in spans:
        if s.parent_span_id and (s.trace_id, s.parent_span_id) in ids:
            children.setdefault((s.trace_id, s.parent_span_id), []).append(s)
        else:
            roots.setdefault(s.trace_id, []).append(s)

    def started(group):
        return sorted(group, key=lambda s: (s.span.start_time_unix_nano, s.name))

    out: List[Tuple[str, ReceivedSpan]] = []

    def walk(prefix: str, group: List[ReceivedSpan]) -> None:
        for i, s in enumerate(started(group)):
            place = "%s / %s#%d" % (prefix, s.name, i)
            out.append((place, s))
            walk(place, children.get((s.trace_id, s.span_id), []))

    traces = sorted(roots.values(), key=lambda group: min(s.span.start_time_unix_nano for s in group))
    for n, group in enumerate(traces):
        walk("trace %d" % n, group)
    return out


def differences(expected: Sequence[ReceivedSpan], got: Sequence[ReceivedSpan],
                expected_name: str = "sdk", got_name: str = "spanprobe") -> List[str]:
    """One line per difference between the two exports; empty when they are the same spans."""
    want = dict(tree(expected))
    have = dict(tree(got))
    lines = []
    for place in want:
        if place not in have:
            lines.append("%s: only in %s" % (place, expected_name))
    for place in have:
        if place not in want:
            lines.append("%s: only in %s" % (place, got_name))
    for place in want:
        if place not in have:
            continue
        a, b = canonical(want[place]), canonical(have[place])
        for field in a:
            if field == "attributes":
                for key in sorted(set(a[field]) | set(b[field])):
                    va, vb = a[field].get(key, "(absent)"), b[field].get(key, "(absent)")
                    if va != vb:
                        lines.append("%s: attribute %s: %s %r, %s %r" % (place, key, expected_name, va, got_name, vb))
            elif a[field] != b[field]:
                lines.append("%s: %s: %s %r, %s %r" % (place, field, expected_name, a[field], got_name, b[field]))
    return lines


def assert_same_spans(expected: Sequence[ReceivedSpan], got: Sequence[ReceivedSpan],
                      expected_name: str = "sdk", got_name: str = "spanprobe") -> None:
    diff = differences(expected, got, expected_name, got_name)
    if diff:
        raise AssertionError("%d difference(s) between the %s export (%d spans) and the %s export (%d spans):\n  %s"
                             % (len(diff), expected_name, len(expected), got_name, len(got), "\n  ".join(diff)))
