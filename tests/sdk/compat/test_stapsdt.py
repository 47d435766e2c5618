"""The seed article's http.server patch and bcc script, run on spanprobe."""

import pytest

from demo_apps.seed.__main__ import run
from demo_apps.seed.patch import PatchError, patched_source
from tests.support import assert_seed_lines


@pytest.mark.bpf
def test_seed_tracer_prints_client_path_and_size():
    lines, served = run()
    assert_seed_lines(lines, served)


def test_patch_applies_to_this_pythons_http_server():
    source = patched_source()
    assert "from spanprobe.compat import stapsdt\n" in source
    assert "probe.fire(self.address_string(), path, os.path.getsize(path))" in source
    compile(source, "patched_http_server.py", "exec")


def test_patch_names_what_it_cannot_find():
    with pytest.raises(PatchError, match="copyfile"):
        patched_source("from http import HTTPStatus\n")
