"""The schema entries spans and events add, and schema.validate's checks of their layout."""

import copy

import pytest

import spanprobe
from spanprobe.abi import schema
from spanprobe.errors import SchemaError
from spanprobe.elf.arch import host_arch


@pytest.fixture
def declared():
    p = spanprobe.Provider("schematest")

    @p.span("handle", kind="server", attributes={"method": ("http.request.method", str)}, record_return="u16")
    def handle(method):
        return 200

    p.span_block("block")
    p.event("tick", n="u32")
    p.add_probe("plain", x=int)
    return p


def test_schema_describes_spans_and_events(declared):
    s = declared.schema()
    schema.validate(s)
    roles = {p["name"]: p["role"] for p in s["probes"]}
    assert roles == {"handle__start": "span_start", "handle__end": "span_end", "handle__span": "span",
                     "block__start": "span_start", "block__end": "span_end", "block__span": "span",
                     "tick": "event", "plain": "plain"}
    span = s["spans"][0]
    assert {k: span[k] for k in ("name", "kind", "start", "end", "span")} == {
        "name": "handle", "kind": "server", "start": "handle__start", "end": "handle__end", "span": "handle__span"}
    assert _probe(s, "handle__span")["args"] == [{"name": "span", "type": "bytes"}]
    assert span["code"]["function"].endswith("handle") and span["code"]["lineno"] > 0
    assert s["events"] == [{"name": "tick", "probe": "tick"}]
    start_args = next(p["args"] for p in s["probes"] if p["name"] == "handle__start")
    assert start_args[-1] == {"name": "http.request.method", "type": "str"}


def test_a_span_entry_without_its_one_hit_probe_is_valid(declared):
    """Hand-declared spans and older SDKs have no "span" probe: their schemas stay valid."""
    s = copy.deepcopy(declared.schema())
    for entry in s["spans"]:
        del entry["span"]
    s["probes"] = [p for p in s["probes"] if p["role"] != "span"]
    schema.validate(s)


def test_schema_survives_the_elf_round_trip(declared):
    image = declared.build_image(host_arch())
    assert image  # the embedded copy is checked by the core's ELF tests; here: it builds and validates
    schema.decode(schema.encode(declared.schema()))


def _broken(declared, change):
    s = copy.deepcopy(declared.schema())
    change(s)
    return s


def _probe(s, name):
    return next(p for p in s["probes"] if p["name"] == name)


@pytest.mark.parametrize("change, message", [
    (lambda s: _probe(s, "handle__start")["args"].pop(0), "must start with span_id:u64"),
    (lambda s: _probe(s, "handle__end")["args"][1].update(type="u32"), "must start with"),
    (lambda s: _probe(s, "tick")["args"][3].update(name="flag"), "must start with"),
    (lambda s: _probe(s, "handle__start").update(role="span_end"), "must start with"),
    (lambda s: s["spans"][0].update(start="handle__end", end="handle__start"), "has role"),
    (lambda s: s["spans"][0].update(start="plain"), "has role 'plain'"),
    (lambda s: s["spans"][1].update(start="handle__start"), "already belongs"),
    (lambda s: s["spans"].pop(1), "no span or event entry"),
    (lambda s: s["events"].clear(), "no span or event entry"),
    (lambda s: s["events"][0].update(probe="plain"), "not 'event'"),
    (lambda s: s["spans"][0].update(kind="sideways"), "unknown kind"),
    (lambda s: s["spans"][0].update(name=""), "non-empty"),
    (lambda s: s["spans"][0].update(code={"lineno": "12"}), "bad code entry"),
    (lambda s: s["spans"][0].update(span="handle__end"), "has role 'span_end', not 'span'"),
    (lambda s: s["spans"][1].update(span="handle__span"), "already belongs"),
    (lambda s: s["spans"][0].update(span="nope"), "span probe 'nope' is not declared"),
    (lambda s: s["spans"][0].pop("span"), "no span or event entry"),
    (lambda s: _probe(s, "handle__span")["args"].append({"name": "x", "type": "u8"}), "no arguments after span"),
])
def test_validate_refuses_inconsistent_span_layouts(declared, change, message):
    with pytest.raises(SchemaError, match=message):
        schema.validate(_broken(declared, change))


def _newer(declared):
    """``declared``'s schema as a newer SDK might write it: a new role for the one-hit probe and a new
    probe role."""
    s = copy.deepcopy(declared.schema())
    _probe(s, "handle__span")["role"] = "span_v9"
    _probe(s, "plain")["role"] = "gauge"
    return s


def test_a_reader_skips_probes_of_roles_it_does_not_know(declared):
    """Forward compatibility: the strict check refuses a newer SDK's schema; a reader passing unknown_roles
    gets the rest, the skipped probes listed, and a span whose one-hit probe was skipped keeps its pair."""
    data = schema.encode(_newer(declared))
    with pytest.raises(SchemaError, match="unknown role 'span_v9'"):
        schema.decode(data)
    unknown = {}
    s = schema.decode(data, unknown_roles=unknown)
    assert unknown == {"handle__span": "span_v9", "plain": "gauge"}
    assert {p["name"] for p in s["probes"]} == {"handle__start", "handle__end", "block__start", "block__end",
                                                "block__span", "tick"}
    handle, block = s["spans"]
    assert "span" not in handle and (handle["start"], handle["end"]) == ("handle__start", "handle__end")
    assert block["span"] == "block__span"
    unknown.clear()  # a known schema: nothing skipped, the same dict as the strict reader's
    assert schema.decode(schema.encode(declared.schema()), unknown_roles=unknown) == declared.schema()
    assert unknown == {}


@pytest.mark.parametrize("change, message", [
    (lambda s: _probe(s, "handle__start").update(role="span_v9"), "start probe 'handle__start' is not declared"),
    (lambda s: _probe(s, "tick").update(role="event_v9"), "names a probe that is not declared"),
    (lambda s: _probe(s, "plain").update(role=7), "unknown role 7"),
])
def test_a_reader_still_refuses_what_only_a_broken_schema_would_have(declared, change, message):
    """Skipping is for unknown roles only: a span or event that needs a skipped probe, or a role that is not
    even a string, still fails validation."""
    with pytest.raises(SchemaError, match=message):
        schema.decode(schema.encode(_broken(declared, change)), unknown_roles={})
