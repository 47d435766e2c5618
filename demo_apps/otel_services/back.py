"""The back Flask service, called by ``front``'s /proxy route.

    python -m demo_apps.otel_services.back [--port N]

Route: /stock/<int:item_id> -> {"item_id": ..., "stock": ...}.
"""

from flask import Flask, jsonify

from . import catalog, serve

app = Flask("back")


@app.route("/stock/<int:item_id>")
def stock(item_id: int):
    return jsonify(item_id=item_id, stock=catalog.stock(item_id))


if __name__ == "__main__":
    serve.serve_wsgi(app, serve.parse_port("back", __doc__))
