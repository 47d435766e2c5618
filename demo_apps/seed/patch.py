"""Apply the seed article's patch to the standard library's http/server.py.

The patch is the article's, with one change: its import line reads
``from spanprobe.compat import stapsdt`` instead of ``import stapsdt``. It is applied
by anchoring on the lines it modifies rather than with fixed line numbers,
so it applies to http/server.py of every Python from 3.9 to 3.13.
"""

import http.server
import re

IMPORT_BLOCK = '''from spanprobe.compat import stapsdt
provider = stapsdt.Provider("simplehttp")
probe = provider.add_probe("file_transfer",
                           stapsdt.ArgTypes.uint64,
                           stapsdt.ArgTypes.uint64,
                           stapsdt.ArgTypes.uint32)
provider.load()
'''
FIRE_LINES = ['path = self.translate_path(self.path)',
              'probe.fire(self.address_string(), path, os.path.getsize(path))']


class PatchError(RuntimeError):
    """The standard library's http/server.py no longer has the lines the patch anchors on."""


def patched_source(source=None):
    """http/server.py's source with the seed's probe added."""
    if source is None:
        with open(http.server.__file__, encoding="utf-8") as f:
            source = f.read()
    anchor = "from http import HTTPStatus\n"
    if anchor not in source:
        raise PatchError(f"no {anchor.strip()!r} line to put the provider after")
    source = source.replace(anchor, anchor + "\n" + IMPORT_BLOCK, 1)
    copy = re.search(r"\n( +)self\.copyfile\(f, self\.wfile\)\n", source)
    if not copy:
        raise PatchError("no 'self.copyfile(f, self.wfile)' line in do_GET to fire the probe before")
    indent = copy.group(1)
    fire = "".join(f"\n{indent}{line}" for line in FIRE_LINES)
    return source[:copy.start()] + fire + source[copy.start():]
