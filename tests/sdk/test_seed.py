"""The seed article's http.server patch and bcc script, run on spanprobe."""

import os
import re

import pytest

from demo_apps.seed.__main__ import FILES, run
from demo_apps.seed.patch import PatchError, patched_source


@pytest.mark.bpf
def test_seed_tracer_prints_client_path_and_size():
    lines, served = run()
    pattern = re.compile(r"^\d+: (\S+) is downloding file (\S+) \((\d+) bytes\)$")
    seen = set()
    for line in lines:
        match = pattern.match(line)
        assert match, line
        client, path, size = match.groups()
        assert client == "127.0.0.1"
        name = os.path.basename(path)
        assert path == os.path.join(served, name)
        assert int(size) == len(FILES[name])
        seen.add(name)
    assert seen == set(FILES)


def test_patch_applies_to_this_pythons_http_server():
    source = patched_source()
    assert "from spanprobe import stapsdt\n" in source
    assert "probe.fire(self.address_string(), path, os.path.getsize(path))" in source
    compile(source, "patched_http_server.py", "exec")


def test_patch_names_what_it_cannot_find():
    with pytest.raises(PatchError, match="copyfile"):
        patched_source("from http import HTTPStatus\n")
