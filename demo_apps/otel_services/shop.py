"""The ASGI service: Starlette under uvicorn, the same three kinds of route as ``front``.

    python -m demo_apps.otel_services.shop [--port N]      (BACK_URL: where back listens)

Routes: /items/{item_id:int} (sqlite3), /proxy/{item_id:int} (requests to
BACK_URL/stock/<id>, in Starlette's thread pool), /boom (raises: 500).
"""

import os

import requests
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import catalog, serve

DB = catalog.create()
BACK_URL = os.environ.get("BACK_URL", "http://127.0.0.1:8001")


async def item(request):
    found = catalog.lookup(DB, request.path_params["item_id"])
    if found is None:
        raise HTTPException(404)
    return JSONResponse(found)


def proxy(request):
    item_id = request.path_params["item_id"]
    reply = requests.get("%s/stock/%d" % (BACK_URL, item_id), timeout=10)
    reply.raise_for_status()
    return JSONResponse({"item_id": item_id, "stock": reply.json()["stock"]})


async def boom(request):
    raise RuntimeError("boom: this route always fails")


app = Starlette(routes=[
    Route("/items/{item_id:int}", item),
    Route("/proxy/{item_id:int}", proxy),
    Route("/boom", boom),
])


if __name__ == "__main__":
    serve.serve_asgi(app, serve.parse_port("shop", __doc__))
