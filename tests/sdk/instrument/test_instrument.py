"""Instrumenting code you do not own: accessors, configs, wrapt hooks (without BPF)."""

import asyncio
import builtins
import os
import sys
import textwrap
import warnings

import pytest

from spanprobe import instrument
from spanprobe.errors import DeclarationError
from spanprobe.instrument import Accessor, Instrumentation
from spanprobe.provider import Provider
from spanprobe.testing import Recorder
from tests.support import ROOT

DEMO_CONFIG = os.path.join(ROOT, "demo_apps", "http_server_probes.toml")


class Handler:
    path = "/a/b.txt"
    client_address = ("10.0.0.1", 5555)

    def translate(self, p):
        return "/srv" + p


@pytest.mark.parametrize("text, value", [
    ("self.client_address[0]", "10.0.0.1"),
    ("self.client_address[-1]", 5555),
    ("self.translate(self.path)", "/srv/a/b.txt"),
    ("len(self.path)", 8),
    ("os.path.basename(self.translate(self.path))", "b.txt"),
    ("str(n)", "3"),
    ("d['k']", "v"),
    ("'const'", "const"),
])
def test_accessor_evaluates(text, value):
    env = {"self": Handler(), "n": 3, "d": {"k": "v"}}
    assert Accessor(text)(env) == value


@pytest.mark.parametrize("text, message", [
    ("self.__class__", "starts with '_'"),
    ("self._secret", "starts with '_'"),
    ("self.__init__()", "starts with '_'"),
    ("a + b", "BinOp is not allowed"),
    ("lambda: 1", "Lambda is not allowed"),
    ("open('/etc/passwd')", "not a function accessors may call"),
    ("__import__('os')", "not a function accessors may call"),
    ("f(x=1)", "positional arguments only"),
    ("x[i]", "constant ints or strings"),
    ("x[", "accessor"),
    ("[x for x in y]", "not allowed"),
])
def test_accessor_refuses(text, message):
    with pytest.raises(DeclarationError, match=message):
        Accessor(text)


def test_demo_config_declares_the_seed_probe():
    inst = instrument.load_config(DEMO_CONFIG)
    p = inst.provider
    assert p.name == "simplehttp"
    ft = p.probes["file_transfer"]
    assert ft.role == "event"
    assert [(a.name, a.type.value) for a in ft.args] == [
        ("span_id", "u64"), ("trace_id_high", "u64"), ("trace_id_low", "u64"), ("flags", "u32"),
        ("client.address", "str"), ("file.path", "str"), ("file.size", "u32")]
    assert {s["name"]: s["kind"] for s in p.schema_spans} == {"http.server.request": "server", "GET": "internal"}
    from spanprobe.abi import schema
    schema.validate(p.schema())


@pytest.mark.parametrize("text, message", [
    ("[[span]]\nfunction='m:f'\n", "needs \\[provider\\]"),
    ("[provider]\nname='p'\n[[spans]]\nfunction='m:f'\n", "unknown sections"),
    ("[provider]\nname='p'\n[[span]]\nname='x'\n", "needs function"),
    ("[provider]\nname='p'\n[[span]]\nfunction='m:f'\ncolour='red'\n", "unknown keys \\['colour'\\]"),
    ("[provider]\nname='p'\n[[span]]\nfunction='nomodule'\n", "must be 'module:Qualified.name'"),
    ("[provider]\nname='p'\n[[event]]\nfunction='m:f'\n[event.attributes]\nx={type='list', value='a'}\n",
     "not a probe argument type"),
    ("[provider]\nname='p'\n[[event]]\nfunction='m:f'\n[event.attributes]\nx={type='str'}\n",
     "give exactly type and value"),
    ("[provider]\nname='p'\n[[event]]\nfunction='m:f'\n[event.attributes]\nx={type='str', value='a+b'}\n",
     "BinOp"),
    ("[provider]\nname='p'\n[[probe]]\nfunction='m:f'\nname='bad name'\n", "not a C identifier"),
    ("[provider\n", "config.toml"),
])
def test_bad_configs_are_refused_with_where(tmp_path, text, message):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(DeclarationError, match=message):
        instrument.load_config(path)


TARGET = '''
import asyncio

def top(a, b=2):
    return a + b

class Shop:
    def __init__(self, name):
        self.name = name

    def buy(self, item, qty=1):
        if qty < 0:
            raise ValueError("negative")
        return f"{item}x{qty}"

    @staticmethod
    def tax(price):
        return price * 2

    @classmethod
    def make(cls, name):
        return cls(name)

    async def fetch(self, n):
        await asyncio.sleep(0)
        return n
'''


@pytest.fixture
def target_module(tmp_path, monkeypatch):
    """A module named uniquely per test, importable but not yet imported."""
    name = f"sp_target_{os.urandom(4).hex()}"
    (tmp_path / f"{name}.py").write_text(TARGET)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def _instrument(name):
    inst = Instrumentation(Provider("insttest"))
    inst.span(f"{name}:Shop.buy", "shop.buy", attributes={"item": ("str", "item"), "shop": ("str", "self.name")},
              end_attributes={"result": ("str", "result"), "qty": ("i32", "qty")})
    inst.span(f"{name}:Shop.fetch", attributes={"n": ("u8", "n")})
    inst.event(f"{name}:Shop.tax", "tax", attributes={"price": ("f64", "price")})
    inst.event(f"{name}:Shop.make", "make", attributes={"name": ("str", "name"), "cls": ("str", "cls.__name__")})
    inst.probe(f"{name}:top", "top_called", args={"a": ("i64", "a"), "b": ("i64", "b")})
    return inst


def _exercise(mod):
    shop = mod.Shop.make("corner")
    assert shop.buy("tea", 2) == "teax2"
    assert mod.Shop.buy(shop, "jam") == "jamx1"  # called through the class: self still bound
    with pytest.raises(ValueError):
        shop.buy("x", -1)
    assert mod.Shop.tax(1.5) == 3.0 and shop.tax(2.0) == 4.0
    assert asyncio.run(shop.fetch(300)) == 300
    assert mod.top(1) == 3


def _check_hits(rec, name):
    starts, ends = rec.of("shop_buy__start"), rec.of("shop_buy__end")
    assert [(s["item"], s["shop"]) for s in starts] == [("tea", "corner"), ("jam", "corner"), ("x", "corner")]
    assert [(e["status"], e["result"], e["qty"]) for e in ends] == [(0, "teax2", 2), (0, "jamx1", 1), (1, "", 0)]
    assert ends[2]["error_type"] == "ValueError" and ends[2]["error_message"] == "negative"
    (fetch,) = rec.of("Shop_fetch__start")
    assert fetch["flags"] == 1 | (1 << 8) and fetch["n"] == 0, "300 does not fit a u8: flagged"
    assert [h["price"] for h in rec.of("tax")] == [1.5, 2.0]
    assert [(h["name"], h["cls"]) for h in rec.of("make")] == [("corner", "Shop")]
    assert rec.of("top_called") == [{"probe": "top_called", "a": 1, "b": 2}]


def test_hooks_apply_when_the_module_is_imported(target_module):
    inst = _instrument(target_module)
    rec = Recorder(inst.provider)
    inst.apply()
    assert target_module not in sys.modules
    mod = __import__(target_module)
    _exercise(mod)
    _check_hits(rec, target_module)


def test_hooks_apply_at_once_to_an_imported_module(target_module):
    mod = __import__(target_module)
    inst = _instrument(target_module)
    rec = Recorder(inst.provider)
    inst.apply()
    _exercise(mod)
    _check_hits(rec, target_module)


def test_untraced_calls_go_straight_through(target_module):
    inst = _instrument(target_module)
    rec = Recorder(inst.provider)
    rec.set_enabled(False)
    inst.apply()
    _exercise(__import__(target_module))
    assert rec.hits == []


def test_bad_targets_warn_and_leave_the_program_alone(target_module):
    inst = Instrumentation(Provider("insttest"))
    inst.span(f"{target_module}:Shop.missing")
    inst.span(f"{target_module}:top", "wrong_names", attributes={"z": ("i64", "zzz")})
    inst.probe("sp_no_such_module_xyz:f", "never", args={})
    Recorder(inst.provider)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inst.apply()
        mod = __import__(target_module)
    messages = " ".join(str(w.message) for w in caught)
    assert "Shop.missing" in messages and "['zzz']" in messages
    assert mod.top(1) == 3


def test_classes_of_the_main_module_are_instrumented_as_they_are_defined(target_module):
    inst = Instrumentation(Provider("insttest"))
    inst.span(f"{target_module}:Shop.buy", "shop.buy", attributes={"item": ("str", "item")})
    rec = Recorder(inst.provider)
    original = builtins.__build_class__
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inst.apply(main_module=target_module)
        namespace = {"__name__": "__main__"}
        exec(compile(TARGET + "\nresult = Shop('m').buy('pen')\n", "<main>", "exec"), namespace)
    finally:
        builtins.__build_class__ = original
    assert namespace["result"] == "penx1"
    assert [s["item"] for s in rec.of("shop_buy__start")] == ["pen"]


def test_command_usage_errors(capsys):
    for argv in ([], ["--config"], ["--config", DEMO_CONFIG], ["--config", DEMO_CONFIG, "-m"], ["--bogus"]):
        assert instrument.main(argv) == 2
        err = capsys.readouterr().err
        assert "usage" in err or "unknown option" in err


def test_a_config_that_cannot_be_used_stops_the_command_before_the_program(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('[provider]\nname = "p"\n[[span]]\nfunction = "m:f"\ncolour = "red"\n')
    script = tmp_path / "never.py"
    script.write_text("raise SystemExit('the program ran')\n")
    assert instrument.main(["--config", str(config), str(script)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"spanprobe-instrument: error: {config}: [[span]] #1: unknown keys ['colour']")
    assert "the program was not started" in err


PROBLEMS = '''[provider]
name = "problems"

[[span]]
function = "{mod}:Shop.by"

[[event]]
function = "sqlite3:Connection.execute"

[[probe]]
name = "p"
function = "{mod}x:top"

[[span]]
function = "{mod}:top"
attributes = {{ "z" = {{ type = "i64", value = "zzz" }} }}
'''


def test_targets_found_wrong_are_reported_at_their_config_line_with_what_to_do(tmp_path, target_module):
    config = tmp_path / "probes.toml"
    config.write_text(PROBLEMS.format(mod=target_module))
    inst = instrument.load_config(config)
    Recorder(inst.provider)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inst.apply()
        mod = __import__(target_module)
        import sqlite3  # noqa: F401 - (already imported or not) its hook is checked now
    by_line = {w.lineno: str(w.message) for w in caught}
    assert {w.filename for w in caught} == {str(config)}, "each points at the config file"
    assert sorted(by_line) == [5, 8, 12, 15], "... at the line of the entry's function key"
    assert by_line[5].startswith(f"spanprobe: [[span]] #1, function = '{target_module}:Shop.by': cannot instrument")
    assert "Shop has no attribute 'by' (did you mean 'buy'?)" in by_line[5]
    assert "sqlite3:Connection.execute is implemented in C" in by_line[8]
    assert "cannot be wrapped in place; instrument the Python function of your program that calls it" \
        in by_line[8]
    assert f"[[probe]] #1, function = '{target_module}x:top'" in by_line[12]
    assert f"no module named '{target_module}x' can be imported here (did you mean '{target_module}'?)" \
        in by_line[12]
    assert "[[span]] #2" in by_line[15] and "['zzz']" in by_line[15]
    assert mod.top(1) == 3, "the program runs on"


def test_functions_of_the_script_being_run_are_instrumented(tmp_path):
    import subprocess
    config = tmp_path / "c.toml"
    config.write_text('[provider]\nname = "scriptfuncs"\n[[span]]\nfunction = "__main__:load_item"\n'
                      '[[span]]\nfunction = "__main__:later"\n')
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent('''
        import sys
        def load_item(n):
            return n * 2
        if sys.argv[1:] == ["x"]:
            async def later():
                pass
        print(load_item(4), type(load_item).__name__, type(later).__name__, __name__,
              sys.modules["__main__"].load_item is load_item, "later" in dir(sys.modules["__main__"]))
        def fails():
            raise ValueError("from the script")
        fails()
    '''))
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "sdk"))
    out = subprocess.run([sys.executable, "-m", "spanprobe.instrument", "--config", str(config), str(script), "x"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == "8 FunctionWrapper FunctionWrapper __main__ True True"
    assert "cannot instrument" not in out.stderr
    # the script's own tracebacks: its file and line numbers
    assert f'File "{script}", line 11, in fails' in out.stderr and out.returncode == 1


def test_command_runs_a_script(tmp_path):
    import subprocess
    config = tmp_path / "c.toml"
    config.write_text('[provider]\nname = "scripttest"\n[[span]]\nfunction = "__main__:Job.run"\n')
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent('''
        import sys
        class Job:
            def run(self):
                return "ran"
        print(Job().run(), sys.argv[1:], type(Job.__dict__["run"]).__name__)
    '''))
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "sdk"))
    out = subprocess.run([sys.executable, "-m", "spanprobe.instrument", "--config", str(config), str(script),
                          "a1", "--flag"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ran ['a1', '--flag'] FunctionWrapper"
    assert "cannot instrument" not in out.stderr
