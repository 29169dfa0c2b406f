"""The web dashboard: ``GET /`` (the page) and ``GET /static/{path}`` (its files).

The page's own HTML, CSS and JavaScript modules live in ``api/static/`` (package
data). The charting library is plotly.js, served from memory at
``/static/vendor/plotly.min.js``, never copied into the repository and never
fetched from a CDN, so the page works offline: the partial bundle
``plotly.js-basic-dist-min`` (scatter and bar traces, all the page draws; 1.1 MB)
that ``make`` installs with npm from ``package.json`` into the checkout's
``node_modules/``, or, where that was not installed (no npm, or a wheel installed
elsewhere), the full ``plotly.min.js`` (4.8 MB) that the ``plotly`` Python package
ships. The partial bundle is what makes a first visit fast (``docs/benchmarks.md``).

Caching: every asset is addressed by a content hash (``?v=<hash>``). The page
names its stylesheet and scripts with their hashed URLs, and an import map gives
the JavaScript modules' imports theirs, so a browser keeps them for a year
(``immutable``) and a new release changes the URLs. Without the right hash an
asset is ``no-cache`` (revalidated with its ``ETag``); the page itself is always
revalidated. Text assets are gzip-compressed once per process, on first request
(Plotly's 4.8 MB script: about 0.2 s of one core, then 1.5 MB on the wire).

The routes are added after the API's and are not part of the OpenAPI document;
they have no rate limit and need no API key (the page's data requests go through
the API and carry the key the user types into the page).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.resources
import logging
import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from index_builder.api.http_cache import if_none_match
from index_builder.errors import NotFoundError

log = logging.getLogger("index_builder.api.dashboard")

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The page's own files (package data)."""
STATIC_PREFIX = "/static/"
PLOTLY_PATH = "vendor/plotly.min.js"
"""Where the installed plotly package's script is served, under ``/static/``."""

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
GZIP_MIN_BYTES = 1024
GZIP_LEVEL = 6
_ASSET_URL = re.compile(r"\{\{asset:([^}]+)\}\}")
_IMPORTMAP = "{{importmap}}"
_MODULEPRELOAD = "{{modulepreload}}"


@dataclass
class Asset:
    """One file served under ``prefix`` (``/static/``): its bytes, hash and (lazily) gzip form."""

    path: str
    body: bytes
    media_type: str
    prefix: str = STATIC_PREFIX
    version: str = field(init=False)
    _gzip: bytes | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.version = hashlib.sha256(self.body).hexdigest()[:16]

    @property
    def url(self) -> str:
        """The cache-forever URL: path and content hash."""
        return f"{self.prefix}{self.path}?v={self.version}"

    @property
    def compressible(self) -> bool:
        """Text (HTML, CSS, JS, SVG; not PNG) large enough for gzip to pay."""
        return len(self.body) >= GZIP_MIN_BYTES and self.media_type != "image/png"

    @property
    def gzip_ready(self) -> bool:
        """True when the gzip form is already in memory."""
        return self._gzip is not None

    def gzipped(self) -> bytes:
        """The gzip form, compressed once (thread-safe; slow for Plotly: call off the loop)."""
        if self._gzip is None:
            with self._lock:
                if self._gzip is None:
                    self._gzip = gzip.compress(self.body, GZIP_LEVEL, mtime=0)
        return self._gzip


@dataclass(frozen=True)
class Page:
    """The dashboard's HTML (with hashed asset URLs) and its Content-Security-Policy."""

    html: Asset
    csp: str


def content_security_policy(inline_scripts: list[str], *, workers: bool = False) -> str:
    """The pages' Content-Security-Policy: everything from this origin only, the given
    inline scripts allowed by their SHA-256, inline styles (Plotly, Swagger UI and
    ReDoc set some), no framing; ``workers``: workers made from blobs (ReDoc)."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in inline_scripts
    )
    directives = [
        "default-src 'self'",
        f"script-src 'self' {hashes}".rstrip(),
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    if workers:
        directives.insert(2, "worker-src 'self' blob:")
    return "; ".join(directives)


class DashboardAssets:
    """The page and every static asset of the dashboard, read once per process."""

    def __init__(self, static_dir: Path, plotly_js: bytes) -> None:
        self.assets: dict[str, Asset] = {}
        for file in sorted(static_dir.rglob("*")):
            if file.is_file() and file.suffix in MEDIA_TYPES and file.name != "index.html":
                rel = file.relative_to(static_dir).as_posix()
                self.assets[rel] = Asset(rel, file.read_bytes(), MEDIA_TYPES[file.suffix])
        self.assets[PLOTLY_PATH] = Asset(PLOTLY_PATH, plotly_js, MEDIA_TYPES[".js"])
        self.page = self._page((static_dir / "index.html").read_text(encoding="utf-8"))

    def _page(self, template: str) -> Page:
        modules = {
            f"{STATIC_PREFIX}{a.path}": a.url
            for a in self.assets.values()
            if a.path.startswith("js/") and a.path.endswith(".js")
        }
        importmap = orjson.dumps({"imports": modules}, option=orjson.OPT_INDENT_2).decode()
        # every module fetched at once, not level by level as imports are discovered
        preloads = "\n".join(f'<link rel="modulepreload" href="{u}">' for u in modules.values())

        def url(match: re.Match[str]) -> str:
            name = match.group(1).strip()
            if name not in self.assets:
                raise KeyError(f"index.html names an unknown asset {name!r}")
            return self.assets[name].url

        html = _ASSET_URL.sub(url, template)
        html = html.replace(_IMPORTMAP, importmap).replace(_MODULEPRELOAD, preloads)
        # inline scripts: only the import map (by its hash); styles: Plotly sets some inline
        csp = content_security_policy([importmap])
        return Page(Asset("index.html", html.encode("utf-8"), MEDIA_TYPES[".html"]), csp)


NPM_BUNDLE = Path(__file__).resolve().parents[3] / "node_modules" / "plotly.js-basic-dist-min"
"""Where ``make`` installs the partial bundle in a checkout (``npm ci``, ``package.json``)."""


def plotly_script(npm_bundle: Path = NPM_BUNDLE) -> tuple[str, bytes]:
    """(where it comes from, the minified plotly.js the page uses): the partial bundle
    installed with npm when it is there, else the full one of the ``plotly`` package."""
    partial = npm_bundle / "plotly-basic.min.js"
    if partial.is_file():
        return str(partial), partial.read_bytes()
    full = importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
    return "the plotly Python package (full bundle; run make for the faster one)", (
        full.read_bytes()
    )


@lru_cache(maxsize=1)
def dashboard_assets() -> DashboardAssets:
    """The process's assets (package data does not change while it runs)."""
    source, script = plotly_script()
    log.info("dashboard: plotly.js from %s (%d KB)", source, len(script) // 1024)
    return DashboardAssets(STATIC_DIR, script)


def _accepts_gzip(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "")


async def asset_response(
    request: Request, asset: Asset, cache_control: str, **extra: str
) -> Response:
    """``asset`` (gzip when accepted), or ``304`` when the client's copy is current."""
    gzipped = asset.compressible and _accepts_gzip(request)
    etag = f'"{asset.version}{"-gz" if gzipped else ""}"'
    headers = {
        "ETag": etag,
        "Cache-Control": cache_control,
        "X-Content-Type-Options": "nosniff",
        **extra,
    }
    if asset.compressible:
        headers["Vary"] = "Accept-Encoding"
    if if_none_match(request, etag):
        return Response(status_code=304, headers=headers)
    body = asset.body
    if gzipped:
        body = asset.gzipped() if asset.gzip_ready else await run_in_threadpool(asset.gzipped)
        headers["Content-Encoding"] = "gzip"
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return Response(status_code=200, headers=headers, media_type=asset.media_type)
    return Response(body, media_type=asset.media_type, headers=headers)


async def dashboard_page(request: Request) -> Response:
    """The dashboard (HTML; always revalidated, the assets it names are immutable)."""
    page = dashboard_assets().page
    return await asset_response(
        request,
        page.html,
        REVALIDATE,
        **{"Content-Security-Policy": page.csp, "Referrer-Policy": "no-referrer"},
    )


async def static_asset(path: str, request: Request) -> Response:
    """A file of the dashboard; ``immutable`` when asked for with its content hash."""
    asset = dashboard_assets().assets.get(path)
    if asset is None:
        raise NotFoundError(f"no dashboard file {path!r}", field="path")
    versioned = request.query_params.get("v") == asset.version
    return await asset_response(request, asset, IMMUTABLE if versioned else REVALIDATE)


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/`` and its files under ``/static/`` (after the API's
    routes, so they cost the API's requests nothing; outside the OpenAPI document)."""
    methods = ["GET", "HEAD"]
    app.add_api_route("/", dashboard_page, methods=methods, include_in_schema=False)
    app.add_api_route(
        STATIC_PREFIX + "{path:path}", static_asset, methods=methods, include_in_schema=False
    )
