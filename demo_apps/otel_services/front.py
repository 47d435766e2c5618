"""The front Flask service: an item from sqlite3, an item's stock from ``back`` over HTTP, a route that fails.

    python -m demo_apps.otel_services.front [--port N]      (BACK_URL: where back listens)

Routes: /items/<int:item_id> (a sqlite3 query; 404 for an unknown id),
/proxy/<int:item_id> (GET BACK_URL/stock/<item_id> with requests),
/boom (raises, so Flask answers 500).
"""

import os

import requests
from flask import Flask, abort, jsonify

from . import catalog, serve

DB = catalog.create()
BACK_URL = os.environ.get("BACK_URL", "http://127.0.0.1:8001")

app = Flask("front")


@app.route("/items/<int:item_id>")
def item(item_id: int):
    found = catalog.lookup(DB, item_id)
    if found is None:
        abort(404)
    return jsonify(found)


@app.route("/proxy/<int:item_id>")
def proxy(item_id: int):
    reply = requests.get("%s/stock/%d" % (BACK_URL, item_id), timeout=10)
    reply.raise_for_status()
    return jsonify(item_id=item_id, stock=reply.json()["stock"])


@app.route("/boom")
def boom():
    raise RuntimeError("boom: this route always fails")


if __name__ == "__main__":
    serve.serve_wsgi(app, serve.parse_port("front", __doc__))
