"""The API documentation pages with no CDN: Swagger UI at ``/docs``, ReDoc at ``/redoc``.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so they stay blank on a
machine without internet access. The app turns them off (``docs_url=None,
redoc_url=None``) and serves them here the way FastAPI documents it ("Custom Docs
UI Static Assets": ``get_swagger_ui_html`` / ``get_redoc_html`` with local URLs).
The files come from the ``fastapi-offline`` Python package, a dependency installed
with the project by pip (so an installed wheel serves them too): Swagger UI 5's
``swagger-ui-bundle.js`` and ``swagger-ui.css``, ReDoc 2's ``redoc.standalone.js``
and a favicon. Only its files are used, not its ``FastAPIOffline`` app factory.

The files are served like the dashboard's (``api/dashboard.py``): from memory,
under content-hashed URLs (``/docs/static/<file>?v=<hash>``, cached for a year,
``immutable``), gzip-compressed once, with ``ETag`` and ``304``. The pages are
rendered once per process, revalidated on every load, and carry a
Content-Security-Policy that allows this origin only (Swagger UI's inline start-up
script by its hash), so a page that tried to load anything from elsewhere would be
refused by the browser. Swagger UI's online validator badge (an image from
swagger.io) is turned off. Like the dashboard, these routes are outside the OpenAPI
document, with no rate limit and no key.
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from functools import lru_cache

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import Response

from index_builder.api.dashboard import (
    IMMUTABLE,
    MEDIA_TYPES,
    REVALIDATE,
    Asset,
    asset_response,
    content_security_policy,
)
from index_builder.errors import NotFoundError

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
DOCS_STATIC_PREFIX = "/docs/static/"
DOCS_PACKAGE = "fastapi_offline"
"""The Python package whose ``static/`` folder ships the files (a dependency)."""
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"
DOCS_FILES = (SWAGGER_JS, SWAGGER_CSS, REDOC_JS, FAVICON)
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}
"""No validator badge: it is an image from swagger.io that would name this API."""
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def docs_files() -> dict[str, bytes]:
    """The Swagger UI and ReDoc files, by name, from the installed package."""
    folder = importlib.resources.files(DOCS_PACKAGE) / "static"
    return {name: (folder / name).read_bytes() for name in DOCS_FILES}


@dataclass(frozen=True)
class DocsPage:
    """One documentation page: its HTML and its Content-Security-Policy."""

    html: Asset
    csp: str


class DocsAssets:
    """The two pages and their files, read and rendered once per process."""

    def __init__(self, files: dict[str, bytes], *, title: str, openapi_url: str) -> None:
        self.assets = {
            name: Asset(name, body, MEDIA_TYPES["." + name.rsplit(".", 1)[-1]], DOCS_STATIC_PREFIX)
            for name, body in files.items()
        }
        favicon = self.assets[FAVICON].url
        swagger = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=self.assets[SWAGGER_JS].url,
            swagger_css_url=self.assets[SWAGGER_CSS].url,
            swagger_favicon_url=favicon,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        ).body
        redoc = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=self.assets[REDOC_JS].url,
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        ).body
        self.swagger = self._page("docs.html", bytes(swagger).decode(), workers=False)
        self.redoc = self._page("redoc.html", bytes(redoc).decode(), workers=True)

    @staticmethod
    def _page(name: str, html: str, *, workers: bool) -> DocsPage:
        inline = _INLINE_SCRIPT.findall(html)
        return DocsPage(
            Asset(name, html.encode(), MEDIA_TYPES[".html"], DOCS_STATIC_PREFIX),
            content_security_policy(inline, workers=workers),
        )


@lru_cache(maxsize=4)
def docs_assets(title: str, openapi_url: str) -> DocsAssets:
    """The process's pages and files (package data does not change while it runs)."""
    return DocsAssets(docs_files(), title=title, openapi_url=openapi_url)


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` and ReDoc at ``/redoc`` from local files (the app
    is created with ``docs_url=None, redoc_url=None``)."""
    openapi_url = app.openapi_url or "/openapi.json"

    def assets() -> DocsAssets:
        return docs_assets(app.title, openapi_url)

    async def page_response(request: Request, page: DocsPage) -> Response:
        headers = {"Content-Security-Policy": page.csp, "Referrer-Policy": "no-referrer"}
        return await asset_response(request, page.html, REVALIDATE, **headers)

    async def swagger_ui(request: Request) -> Response:
        """Swagger UI (the interactive documentation)."""
        return await page_response(request, assets().swagger)

    async def redoc(request: Request) -> Response:
        """ReDoc (the reference documentation)."""
        return await page_response(request, assets().redoc)

    async def docs_file(name: str, request: Request) -> Response:
        """A file of the documentation pages; ``immutable`` with its content hash."""
        asset = assets().assets.get(name)
        if asset is None:
            raise NotFoundError(f"no documentation file {name!r}", field="name")
        versioned = request.query_params.get("v") == asset.version
        return await asset_response(request, asset, IMMUTABLE if versioned else REVALIDATE)

    methods = ["GET", "HEAD"]
    app.add_api_route(DOCS_URL, swagger_ui, methods=methods, include_in_schema=False)
    app.add_api_route(REDOC_URL, redoc, methods=methods, include_in_schema=False)
    app.add_api_route(
        DOCS_STATIC_PREFIX + "{name}", docs_file, methods=methods, include_in_schema=False
    )
