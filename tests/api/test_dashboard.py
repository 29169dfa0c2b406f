"""The dashboard's routes: the page at ``/``, its files and Plotly's script under ``/static/``.

These run in process (TestClient); ``test_dashboard_browser.py`` drives the page in
a real headless Chromium.
"""

from __future__ import annotations

import gzip
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from index_builder.api.app import create_app
from index_builder.api.dashboard import (
    PLOTLY_PATH,
    STATIC_DIR,
    dashboard_assets,
    plotly_script,
)

from api_helpers import make_settings

KEY = "dash-test-key-0123456789"


@pytest.fixture
def app_client(database: Path) -> Iterator[TestClient]:
    """The real app without Redis, API keys required for builds and exports, and reads."""
    settings = make_settings(
        database,
        None,
        api_keys=f"viewer:read:{KEY}",
        reads_require_key=True,
        rate_limit_reads="3/minute",
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="(/static/[^"]+)"', html)


def test_the_page_is_served_at_the_root_with_hashed_assets(app_client: TestClient) -> None:
    page = app_client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache" and page.headers["etag"]
    html = page.text
    assert "{{" not in html  # every placeholder filled
    urls = _asset_urls(html)
    assert any(u.startswith("/static/vendor/plotly.min.js?v=") for u in urls)
    assert any(u.startswith("/static/js/main.js?v=") for u in urls)
    for url in urls:
        asset = app_client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    # the import map gives every module its hashed URL
    importmap = re.search(r'<script type="importmap">(.*?)</script>', html, re.S)
    assert importmap is not None
    modules = sorted(p.name for p in (STATIC_DIR / "js").glob("*.js"))
    for name in modules:
        assert f'"/static/js/{name}": "/static/js/{name}?v=' in importmap.group(1)


def test_the_page_is_open_and_not_rate_limited_while_reads_need_a_key(
    app_client: TestClient,
) -> None:
    for _ in range(5):  # beyond the reads budget of 3/minute
        assert app_client.get("/").status_code == 200
        asset = app_client.get("/static/dashboard.css")
        assert asset.status_code == 200 and "ratelimit-limit" not in asset.headers
    assert app_client.get("/indices").status_code == 401  # the API itself still needs the key
    assert app_client.get("/indices", headers={"X-API-Key": KEY}).status_code == 200


def test_content_security_policy_allows_only_this_origin(app_client: TestClient) -> None:
    page = app_client.get("/")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    assert "'unsafe-eval'" not in csp
    script_src = next(d for d in csp.split("; ") if d.startswith("script-src"))
    assert "'unsafe-inline'" not in script_src  # the inline import map is allowed by hash
    assert page.headers["x-content-type-options"] == "nosniff"


def test_no_external_urls_in_the_page_or_its_own_files(app_client: TestClient) -> None:
    """No CDN: the page and its scripts and styles name nothing off this origin."""
    texts = {"/": app_client.get("/").text}
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file() and path.suffix in {".html", ".js", ".css"}:
            texts[str(path)] = path.read_text(encoding="utf-8")
    for where, text in texts.items():
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), where


def test_plotly_is_an_installed_file_and_not_in_the_repository(
    app_client: TestClient,
) -> None:
    served = app_client.get("/static/vendor/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert served.status_code == 200
    assert served.content == plotly_script()[1]
    assert served.content.startswith(b"/**\n* plotly.js")
    assert served.headers["content-type"].startswith("text/javascript")
    repo = Path(__file__).resolve().parents[2]
    assert not list(repo.glob("src/**/plotly*.js")), "plotly.js must not be committed"
    tracked = subprocess.run(
        ["git", "ls-files", "*.js"], cwd=repo, capture_output=True, text=True, check=False
    ).stdout.split()
    assert all(path.startswith("src/index_builder/api/static/js/") for path in tracked)


def test_the_npm_partial_bundle_is_preferred_and_the_package_is_the_fallback(
    tmp_path: Path,
) -> None:
    full_source, full = plotly_script(tmp_path / "missing")
    assert "plotly Python package" in full_source and len(full) > 3_000_000
    bundle = tmp_path / "plotly.js-basic-dist-min"
    bundle.mkdir()
    (bundle / "plotly-basic.min.js").write_bytes(b"/** partial */")
    assert plotly_script(bundle) == (str(bundle / "plotly-basic.min.js"), b"/** partial */")


def test_gzip_etag_and_conditional_requests(app_client: TestClient) -> None:
    url = f"/static/{PLOTLY_PATH}"
    version = dashboard_assets().assets[PLOTLY_PATH].version
    zipped = app_client.get(url, params={"v": version}, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["vary"] == "Accept-Encoding"
    assert zipped.content == plotly_script()[1]  # httpx decodes it
    assert int(zipped.headers["content-length"]) < len(plotly_script()[1]) / 2
    etag = zipped.headers["etag"]
    again = app_client.get(
        url, params={"v": version}, headers={"Accept-Encoding": "gzip", "If-None-Match": etag}
    )
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    # a stale or missing version is served but revalidated, never cached for a year
    stale = app_client.get(url, params={"v": "0" * 16})
    assert stale.status_code == 200 and stale.headers["cache-control"] == "no-cache"
    page = app_client.get("/", headers={"Accept-Encoding": "gzip"})
    assert page.headers["content-encoding"] == "gzip" and "Content-Security" not in page.text
    assert "content-security-policy" in page.headers
    not_modified = app_client.get("/", headers={"If-None-Match": page.headers["etag"]})
    assert not_modified.status_code == 304
    head = app_client.head(url, headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(plotly_script()[1])


def test_gzip_bytes_are_valid(app_client: TestClient) -> None:
    asset = dashboard_assets().assets["js/main.js"]
    assert gzip.decompress(asset.gzipped()) == asset.body


@pytest.mark.parametrize("path", ["nope.js", "../app.py", "..%2Fdashboard.py", "js/../../app.py"])
def test_unknown_files_are_problem_json_404(app_client: TestClient, path: str) -> None:
    response = app_client.get(f"/static/{path}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["title"] == "Not Found"


def test_docs_stay_and_the_dashboard_is_not_in_the_openapi_document(
    app_client: TestClient,
) -> None:
    assert app_client.get("/docs").status_code == 200
    paths = app_client.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert not any(p.startswith("/static") for p in paths)


def test_the_dashboard_routes_have_bounded_metric_labels(app_client: TestClient) -> None:
    app_client.get("/static/js/api.js")
    app_client.get("/static/nope.js")
    metrics = app_client.get("/metrics").text
    assert 'route="/static/{path:path}"' in metrics
    assert "nope.js" not in metrics


def test_build_all_is_a_button_with_an_outcome_list_and_no_inline_code() -> None:
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    row = re.search(r'<div class="button-row">(.*?)</div>', html, re.S)
    assert row is not None  # next to the single build button
    assert 'id="build-button"' in row.group(1) and 'id="build-all-button"' in row.group(1)
    outcomes = re.search(r'<div id="build-outcomes"[^>]*hidden>(.*?)</div>', html, re.S)
    assert outcomes is not None
    headers = re.findall(r'<th scope="col">([^<]+)</th>', outcomes.group(1))
    assert headers == ["Index", "Outcome", "Mode", "Through", "Reason"]
    assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handlers
    assert len(re.findall(r"<script\b", html)) == 3  # plotly, the import map, main.js
    actions = (STATIC_DIR / "js" / "actions.js").read_text(encoding="utf-8")
    assert 'request("/builds", { method: "POST", accept: [202] })' in actions
    assert 'this.follow(await response.json(), "Build-all job")' in actions  # the job polling
    assert 'this.status.dataset.outcome = "built-all"' in actions
    assert 'this.status.dataset.outcome = "built"' in actions  # kept for the single build
    assert "result.outcome" in actions  # the single build says built or unchanged
    assert "innerHTML" not in actions  # reasons are text, never markup
    css = (STATIC_DIR / "dashboard.css").read_text(encoding="utf-8")
    assert '.build-outcomes tr[data-outcome="failed"]' in css
