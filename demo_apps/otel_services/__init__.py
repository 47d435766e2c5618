"""Services with no tracing code, for the official OpenTelemetry instrumentations.

``front`` and ``back`` are Flask apps, ``shop`` a Starlette app. Run each under
``opentelemetry-instrument``: the instrumentations (flask, requests, sqlite3,
starlette) make their spans, and whichever TracerProvider the environment
chooses (the SDK, or spanprobe's with OTEL_PYTHON_TRACER_PROVIDER=spanprobe)
receives them. tests/otel compares the two; bench/bench_flask.py measures them.
They need flask, requests, starlette and uvicorn (the ``dev`` extra), which
nothing else in spanprobe does.
"""
