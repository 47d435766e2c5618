"""The seed article's simple HTTP server with spanprobe probes, without patching http.server.

    python -m demo_apps.simplehttp [--port N] [--directory DIR] [--bind ADDR]

The seed patched a copy of http/server.py to fire one probe. Here a subclass
of the standard library's handler fires the same probe (so the seed's bcc
script works unchanged) and adds a server span per request with the file copy
as its child span. probes.py declares them; handler.py fires them.
"""
