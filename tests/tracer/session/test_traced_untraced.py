"""A probe behaves the same traced or not; a span that failed invents no end attributes (issue 14, items 1-2).

The same application runs untraced, then under `spanprobe trace -- ...`:
what it sees (each call's outcome) must be identical, and what the tracer
exports must hold no value the application did not give.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import child_env
from tests.support.tracer_helpers import run_spanprobe

pytestmark = pytest.mark.bpf

APP = r'''
import json
import spanprobe

p = spanprobe.Provider("same")
plain = p.add_probe("plain", label=str, n="u8")
note = p.event("note", text=str)
block = p.span_block("blk", attributes={"what": str},
                     end_attributes={"http.response.status_code": "u16", "size": "u32"})

@p.span(attributes=True)
def handle(path: str):
    return None

@p.span("fails", record_return=("http.response.status_code", "u16"))
def fails():
    raise KeyError("k")

p.load()
outcomes = {}

def attempt(name, call):
    try:
        call()
        outcomes[name] = "ok"
    except Exception as exc:
        outcomes[name] = type(exc).__name__

def bad_block():
    with block(123) as s:
        s.set_end("not a u16", 1)

def failing_block():
    with block("/failing") as s:
        s.set_end(500)
        raise ValueError("after set_end")

def wrong_set_end():
    with block("/wrong") as s:
        s.set_end(1, 2, 3)

attempt("plain wrong value", lambda: plain.fire(123, 4))
attempt("plain lazy raises", lambda: plain.fire(lambda: 1 / 0, 4))
attempt("plain ok", lambda: plain.fire("good", 4))
attempt("span wrong value", lambda: handle(123))
attempt("event wrong value", lambda: note.fire(123))
attempt("block wrong values", bad_block)
attempt("plain wrong count", lambda: plain.fire(1))
attempt("event wrong count", lambda: note.fire(1, 2))
attempt("block wrong set_end", wrong_set_end)
attempt("failing block", failing_block)
attempt("failing function", fails)
print(json.dumps({"outcomes": outcomes, "traced": bool(plain.enabled),
                  "skipped": plain.conversion_failures}))
'''

EXPECTED = {
    "plain wrong value": "ok", "plain lazy raises": "ok", "plain ok": "ok", "span wrong value": "ok",
    "event wrong value": "ok", "block wrong values": "ok",
    # what the SDK sees without a tracer stays an error, in both states
    "plain wrong count": "TypeError", "event wrong count": "TypeError", "block wrong set_end": "TypeError",
    # the application's own exceptions propagate, unchanged
    "failing block": "ValueError", "failing function": "KeyError",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("same")
    script = tmp / "app.py"
    script.write_text(APP)
    untraced = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                              env=child_env())
    assert untraced.returncode == 0, untraced.stderr
    out = tmp / "spans.jsonl"
    traced = run_spanprobe("trace", "--exporter", "jsonl", "--output", str(out), "--", sys.executable,
                           str(script), timeout=120)
    assert traced.returncode == 0, traced.stderr
    spans = [json.loads(line) for line in out.read_text().splitlines()]
    return untraced, traced, spans


def report(proc):
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_same_wrong_values_behave_the_same_traced_and_untraced(runs):
    untraced, traced, _ = runs
    quiet, loud = report(untraced), report(traced)
    assert (quiet["traced"], loud["traced"]) == (False, True)
    assert quiet["outcomes"] == loud["outcomes"] == EXPECTED
    # traced, the plain probe's two bad hits were skipped, counted and logged once, naming the argument
    assert (quiet["skipped"], loud["skipped"]) == (0, 2)
    assert "probe same:plain argument 'label': expected a str, got int 123; hit skipped" in traced.stderr
    assert "hit skipped" not in untraced.stderr


def test_what_did_not_convert_is_left_out_and_named(runs):
    _, _, spans = runs
    plain = [s for s in spans if s["name"] == "same.plain"]
    assert [s["attributes"]["label"] for s in plain] == ["good"], "bad plain hits are skipped, never zeroed"
    (handle,) = [s for s in spans if s["name"].endswith("handle")]
    assert "path" not in handle["attributes"]
    assert handle["attributes"]["spanprobe.conversion_failed"] == ["path"]
    (note,) = [s for s in spans if s["name"] == "note"]
    assert "text" not in note["attributes"] and note["attributes"]["spanprobe.conversion_failed"] == ["text"]
    (bad,) = [s for s in spans if s["name"] == "blk" and "size" in s["attributes"]]
    assert bad["attributes"]["size"] == 1
    assert bad["attributes"]["spanprobe.conversion_failed"] == ["what", "http.response.status_code"]


def test_a_span_that_raised_exports_no_invented_end_attributes(runs):
    _, _, spans = runs
    (function,) = [s for s in spans if s["name"] == "fails"]
    assert function["status"]["code"] == "ERROR"
    assert "http.response.status_code" not in function["attributes"], "no return value: nothing to report"
    failing = [s for s in spans if s["name"] == "blk" and s["attributes"].get("what") == "/failing"]
    (block,) = failing
    assert block["status"]["code"] == "ERROR"
    assert block["attributes"]["http.response.status_code"] == 500, "given by set_end before the raise"
    assert "size" not in block["attributes"]
    assert block["attributes"]["spanprobe.conversion_failed"] == ["size"]
