"""The "framework floor" for bench/api.py: FastAPI under uvicorn returning fixed bytes.

    python bench/floor_app.py --port P --route /index-performance=perf.json [--route ...]

Each ``--route PATH=FILE`` serves, from memory, exactly the bytes of FILE as
``application/json`` on GET PATH (query parameters are ignored). Nothing is parsed,
looked up or serialized per request, so its throughput is what FastAPI and uvicorn
alone can do for a body of that size. uvicorn runs as ``index-builder serve`` runs
it: one process, ``log_level="warning"``.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response

JSON = "application/json"


def _endpoint(body: bytes) -> Callable[[], Awaitable[Response]]:
    """A GET handler that returns ``body`` unchanged."""

    async def endpoint() -> Response:
        return Response(body, media_type=JSON)

    return endpoint


def create_floor_app(routes: dict[str, bytes]) -> FastAPI:
    """A FastAPI app answering GET ``path`` with its fixed bytes, for each route."""
    app = FastAPI(title="framework floor", openapi_url=None, docs_url=None, redoc_url=None)
    for path, body in routes.items():
        app.add_api_route(path, _endpoint(body), methods=["GET"])
    return app


def _route(value: str) -> tuple[str, bytes]:
    """Parse ``PATH=FILE`` into the path and the file's bytes."""
    path, sep, file = value.partition("=")
    if not sep or not path.startswith("/"):
        raise argparse.ArgumentTypeError(f"expected /PATH=FILE, got {value!r}")
    return path, Path(file).read_bytes()


def main() -> None:
    """Serve the routes given on the command line on 127.0.0.1 until terminated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--route", type=_route, action="append", required=True)
    args = parser.parse_args()
    app = create_floor_app(dict(args.route))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
