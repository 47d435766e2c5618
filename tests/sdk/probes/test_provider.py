"""Declaring providers and probes, loading and unloading: errors are clear and early."""

import warnings

import pytest

from spanprobe import ArgType, DeclarationError, Provider, ProviderStateError
from spanprobe.abi.schema import decode, encode
from spanprobe.probes import provider as provider_module
from spanprobe.testing import raise_semaphore


@pytest.mark.parametrize("name", ["", "1abc", "has space", "dash-ed", "dot.ted", "ünï", "a" * 65, None, 3])
def test_bad_provider_names_are_refused(name):
    with pytest.raises(DeclarationError, match="provider name"):
        Provider(name)


@pytest.mark.parametrize("name", ["", "9x", "a b", "x-y", "a" * 65])
def test_bad_probe_names_are_refused(name):
    with pytest.raises(DeclarationError, match="probe name"):
        Provider("p").add_probe(name)


def test_duplicate_probe_is_refused():
    p = Provider("p")
    p.add_probe("x")
    with pytest.raises(DeclarationError, match="already has a probe named 'x'"):
        p.add_probe("x", int)


def test_more_than_twelve_arguments_is_refused():
    Provider("p").add_probe("twelve", *[int] * 12)
    with pytest.raises(DeclarationError, match="13 arguments; USDT probes carry at most 12"):
        Provider("p").add_probe("thirteen", *[int] * 13)


@pytest.mark.parametrize("bad", [list, dict, "i128", object(), complex])
def test_types_it_cannot_carry_are_refused(bad):
    with pytest.raises(TypeError, match="is not a probe argument type"):
        Provider("p").add_probe("x", value=bad)


def test_argument_names_are_checked():
    with pytest.raises(DeclarationError, match="declared twice"):
        Provider("p").add_probe("x", ("a", int), ("a", str))
    with pytest.raises(DeclarationError, match="must be an identifier"):
        Provider("p").add_probe("x", ("a b", int))


def test_declaration_forms_and_schema():
    p = Provider("shop")
    p.add_probe("plain", int, "u8", ArgType.STR)
    p.add_probe("named", ("http.request.method", str), size="u32", ok=bool, ratio=float, blob=bytes)
    schema = decode(encode(p.schema()))
    assert schema["provider"] == "shop" and schema["version"] == 1
    probes = {pr["name"]: pr for pr in schema["probes"]}
    assert probes["plain"]["args"] == [
        {"name": "arg0", "type": "i64"}, {"name": "arg1", "type": "u8"}, {"name": "arg2", "type": "str"}]
    assert [(a["name"], a["type"]) for a in probes["named"]["args"]] == [
        ("http.request.method", "str"), ("size", "u32"), ("ok", "bool"), ("ratio", "f64"), ("blob", "bytes")]


def test_load_twice_unload_twice_and_declare_while_loaded():
    p = Provider("states")
    p.add_probe("x", int)
    p.load()
    try:
        with pytest.raises(ProviderStateError, match="already loaded"):
            p.load()
        with pytest.raises(ProviderStateError, match="declare probes before load"):
            p.add_probe("y")
    finally:
        p.unload()
    with pytest.raises(ProviderStateError, match="not loaded"):
        p.unload()


def test_probe_is_visible_in_maps_while_loaded_only():
    p = Provider("mapped")
    p.add_probe("x")
    with p:
        assert p.usdt_active
        maps = open("/proc/self/maps").read()
        assert "spanprobe:mapped" in maps or "libmapped.so" in maps
    maps = open("/proc/self/maps").read()
    assert "spanprobe:mapped" not in maps and "libmapped.so" not in maps


def test_reload_after_unload_gets_a_fresh_object():
    p = Provider("again")
    x = p.add_probe("x", int)
    for _ in range(3):
        p.load()
        raise_semaphore(x)
        assert x.enabled
        x.fire(1)
        p.unload()
        assert not x.enabled


def test_unsupported_platform_loads_as_noop_with_one_warning(monkeypatch):
    monkeypatch.setattr(provider_module, "host_arch", lambda: None)
    monkeypatch.setattr(provider_module.NOOP_WARNING, "issued", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        providers = [Provider(f"noop{i}") for i in range(3)]
        probes = [p.add_probe("x", int) for p in providers]
        for p in providers:
            p.load()
    assert len([w for w in caught if "USDT probes are unavailable" in str(w.message)]) == 1
    for p, probe in zip(providers, probes):
        assert p.loaded and not p.usdt_active
        assert not probe.enabled
        probe.fire(1)
        p.unload()


def test_semaphore_view_semantics():
    p = Provider("sem")
    x = p.add_probe("x")
    with p:
        assert not x.enabled and x.enabled == False and int(x.enabled) == 0  # noqa: E712
        raise_semaphore(x)
        raise_semaphore(x)
        assert x.enabled and x.enabled == True and x.enabled == 2  # noqa: E712
        assert repr(x.enabled) == "<Semaphore 2>"
        stale = x.enabled
    assert not stale  # after unload an old view reads 0 and stays valid memory
    assert not x.enabled
