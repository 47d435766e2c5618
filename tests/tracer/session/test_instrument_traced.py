"""Programs run through spanprobe-instrument, traced with real BPF (issue 14 items 4 and 6).

The console script is run as a user runs it (the one pip installed next to
this interpreter), under `spanprobe trace -- ...`.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

from tests.support.tracer_helpers import run_spanprobe

pytestmark = pytest.mark.bpf

INSTRUMENT = os.path.join(os.path.dirname(sys.executable), "spanprobe-instrument")

CONFIG = '''
[provider]
name = "inventory"

[[span]]
function = "__main__:Store.load"
attributes = { "item.id" = { type = "u32", value = "item_id" } }

[[span]]
function = "__main__:load_item"
attributes = { "item.id" = { type = "u32", value = "item_id" } }
end_attributes = { "item.name" = { type = "str", value = "result" } }
'''

SCRIPT = textwrap.dedent('''
    class Store:
        def load(self, item_id):
            return load_item(item_id)

    def load_item(item_id):
        return "item-%d" % item_id

    if __name__ == "__main__":
        print([Store().load(i) for i in range(3)])
''')


def traced(tmp_path, env=None):
    (tmp_path / "probes.toml").write_text(CONFIG)
    (tmp_path / "inventory_app.py").write_text(SCRIPT)
    out = tmp_path / "spans.jsonl"
    r = run_spanprobe("trace", "--exporter", "jsonl", "--output", str(out), "--", INSTRUMENT,
                      "--config", str(tmp_path / "probes.toml"), str(tmp_path / "inventory_app.py"),
                      timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    return r, [json.loads(line) for line in out.read_text().splitlines()]


def test_the_console_script_names_the_service_after_the_program(tmp_path):
    r, spans = traced(tmp_path)
    assert r.stdout.strip().splitlines()[-1] == "['item-0', 'item-1', 'item-2']"
    assert spans, r.stderr
    assert {s["resource"]["service.name"] for s in spans} == {"inventory_app"}


def test_a_function_of_the_script_being_run_is_a_span(tmp_path):
    r, spans = traced(tmp_path)
    assert "cannot instrument" not in r.stderr
    loads = {s["span_id"]: s for s in spans if s["name"] == "Store.load"}
    items = [s for s in spans if s["name"] == "load_item"]
    assert sorted((s["attributes"]["item.id"], s["attributes"]["item.name"]) for s in items) == [
        (0, "item-0"), (1, "item-1"), (2, "item-2")]
    for item in items:  # called from the method: its child
        assert loads[item["parent_span_id"]]["attributes"]["item.id"] == item["attributes"]["item.id"]
        assert item["attributes"]["code.function.name"] == "__main__.load_item"


def test_otel_service_name_still_wins(tmp_path):
    _, spans = traced(tmp_path, env={"OTEL_SERVICE_NAME": "checkout"})
    assert spans and {s["resource"]["service.name"] for s in spans} == {"checkout"}
