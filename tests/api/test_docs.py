"""The API documentation pages (``/docs``: Swagger UI, ``/redoc``: ReDoc) with no CDN.

In process (TestClient); ``test_dashboard_browser.py`` opens them in a real headless
Chromium with every request off 127.0.0.1 refused.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from index_builder.api.app import create_app
from index_builder.api.docs import DOCS_FILES, docs_files

from api_helpers import make_settings

KEY = "docs-test-key-0123456789"
IMMUTABLE = "public, max-age=31536000, immutable"
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".json": "application/json",
}


@pytest.fixture
def app_client(database: Path) -> Iterator[TestClient]:
    """The real app without Redis, with reads that need a key and a tiny read budget."""
    settings = make_settings(
        database,
        None,
        api_keys=f"viewer:read:{KEY}",
        reads_require_key=True,
        rate_limit_reads="3/minute",
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _urls(html: str) -> list[str]:
    """Every URL the page names: links, scripts, the OpenAPI document."""
    return re.findall(r'(?:href|src|spec-url)="([^"]+)"', html) + re.findall(
        r"url: '([^']+)'", html
    )


def _suffix(url: str) -> str:
    return "." + url.split("?", 1)[0].rsplit(".", 1)[-1]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_name_only_same_origin_urls_that_answer(
    app_client: TestClient, page: str
) -> None:
    response = app_client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache" and response.headers["etag"]
    html = response.text
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.I), html  # no CDN
    urls = _urls(html)
    assert "/openapi.json" in urls
    assert len(urls) == (4 if page == "/docs" else 3)  # (css,) favicon, js, openapi
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = app_client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"] == CONTENT_TYPES[_suffix(url)], url
        if url.startswith("/docs/static/"):
            assert asset.headers["cache-control"] == IMMUTABLE, url
            assert asset.headers["x-content-type-options"] == "nosniff"


def test_the_files_are_the_installed_packages_swagger_ui_5_and_redoc(
    app_client: TestClient,
) -> None:
    files = docs_files()
    assert set(files) == set(DOCS_FILES)
    html = app_client.get("/docs").text
    js = next(u for u in _urls(html) if "swagger-ui-bundle.js" in u)
    served = app_client.get(js, headers={"Accept-Encoding": "identity"})
    assert served.content == files["swagger-ui-bundle.js"]
    assert b"SwaggerUIBundle" in served.content
    # Swagger UI 5 renders OpenAPI 3.1, which FastAPI writes (4.x says it cannot)
    assert app_client.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert re.search(rb'"5\.\d+\.\d+"', served.content)
    css = next(u for u in _urls(html) if "swagger-ui.css" in u)
    assert app_client.get(css).content == files["swagger-ui.css"]
    redoc = app_client.get("/redoc").text
    bundle = next(u for u in _urls(redoc) if "redoc.standalone.js" in u)
    assert app_client.get(bundle).content == files["redoc.standalone.js"]
    assert files["favicon.png"].startswith(b"\x89PNG")


def test_the_pages_allow_only_this_origin_and_their_own_inline_script(
    app_client: TestClient,
) -> None:
    docs = app_client.get("/docs")
    csp = docs.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    assert "'unsafe-eval'" not in csp and "frame-ancestors 'none'" in csp
    script_src = next(d for d in csp.split("; ") if d.startswith("script-src"))
    assert "'unsafe-inline'" not in script_src
    inline = re.findall(r"<script>(.*?)</script>", docs.text, re.S)
    assert len(inline) == 1 and "SwaggerUIBundle(" in inline[0]
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in script_src
    assert '"validatorUrl": null' in inline[0]  # no badge image from swagger.io
    redoc = app_client.get("/redoc")
    csp = redoc.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "worker-src 'self' blob:" in csp
    assert "<script>" not in redoc.text
    for response in (docs, redoc):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"


def test_the_files_are_gzipped_and_revalidated_like_the_dashboards(
    app_client: TestClient,
) -> None:
    url = next(u for u in _urls(app_client.get("/docs").text) if "swagger-ui-bundle.js" in u)
    raw = docs_files()["swagger-ui-bundle.js"]
    zipped = app_client.get(url, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.content == raw
    assert int(zipped.headers["content-length"]) < len(raw) / 2
    again = app_client.get(
        url, headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""
    stale = app_client.get("/docs/static/swagger-ui-bundle.js", params={"v": "0" * 16})
    assert stale.status_code == 200 and stale.headers["cache-control"] == "no-cache"
    png = app_client.get("/docs/static/favicon.png", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in png.headers  # images are not worth compressing
    page = app_client.get("/docs")
    revalidated = app_client.get("/docs", headers={"If-None-Match": page.headers["etag"]})
    assert revalidated.status_code == 304
    head = app_client.head("/docs")
    assert head.status_code == 200 and head.content == b""


def test_the_docs_are_open_outside_the_openapi_document_and_unknown_files_are_404(
    app_client: TestClient,
) -> None:
    for _ in range(5):  # beyond the reads budget of 3/minute, with no key
        assert app_client.get("/docs").status_code == 200
        assert app_client.get("/redoc").status_code == 200
        assert app_client.get("/docs/static/swagger-ui.css").status_code == 200
    assert app_client.get("/indices").status_code == 401  # the API itself still needs the key
    paths = app_client.get("/openapi.json").json()["paths"]
    assert not any(p.startswith(("/docs", "/redoc")) for p in paths)
    for name in ("nope.js", "..%2Fdocs.py", "index.html"):
        missing = app_client.get(f"/docs/static/{name}")
        assert missing.status_code == 404, name
        assert missing.headers["content-type"].startswith("application/problem+json")
