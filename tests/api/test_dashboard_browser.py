"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright),
against ``index-builder serve`` in a subprocess over a small synthetic market.

What a person does: load the page, pick an index and a window, read the chart, the
cards and the table (the API's numbers), sort, compare indices, build (synchronously
and as a job), export, meet an API error, use the keyboard, use a phone. Screenshots
are kept under ``artifacts/`` (or ``$INDEX_BUILDER_TEST_ARTIFACTS``).

Chromium or Playwright missing: the tests fail when ``CI`` is set (CI must run them),
and are skipped with the reason otherwise.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest

from serve_process import ServeProcess

from redis_server import RedisServer

KEY = "dash-browser-key-0123456789"
KEYS = f"dashboard:read+build+export:{KEY}"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 20_000
REPO = Path(__file__).resolve().parents[2]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (CI must run the browser tests: make system-deps installs it)")
    pytest.skip(reason)


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        _unavailable("no chromium executable (Debian package 'chromium')")
    return path


def artifacts_dir() -> Path:
    """Where screenshots and downloads are kept (``INDEX_BUILDER_TEST_ARTIFACTS``)."""
    folder = Path(os.environ.get("INDEX_BUILDER_TEST_ARTIFACTS") or REPO / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---------------------------------------------------------------------------- server
class Server(ServeProcess):
    """``index-builder serve`` with API keys, and a client that reads with a key."""

    def __init__(self, database: Path, redis_url: str, log: Path) -> None:
        env = {
            "INDEX_BUILDER_DATABASE": str(database),
            "INDEX_BUILDER_REDIS_URL": redis_url,
            "INDEX_BUILDER_API_KEYS": KEYS,
            "INDEX_BUILDER_DUCKDB_THREADS": "2",
            "INDEX_BUILDER_LOG_FORMAT": "json",
        }
        # cwd: a folder with no stray .env
        super().__init__(log, env, options=["-q"], cwd=database.parent)
        self.http = httpx.Client(base_url=self.base, timeout=20)

    def api(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params, headers={"X-API-Key": KEY})
        assert response.status_code == 200, response.text
        return response.json()

    def stop(self) -> int:
        self.http.close()
        return super().stop()


@pytest.fixture(scope="module")
def server(
    built_template: Path, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The API and the dashboard over a private copy of the built 300 x 60 market."""
    folder = tmp_path_factory.mktemp("dashboard-server")
    database = folder / "dashboard.duckdb"
    shutil.copy(built_template, database)
    redis_server.flush()
    served = Server(database, redis_server.url, folder / "serve.log")
    try:
        served.wait_ready()
        yield served
    finally:
        served.stop()


# ---------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Chromium profile for the module (its HTTP and code caches make reloads fast)."""
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            viewport=DESKTOP,
            accept_downloads=True,
            args=["--disable-gpu", "--disable-dev-shm-usage"],
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


class Watched:
    """A page with what it asked for and what went wrong in it."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.console: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and self.console.append(m.text))

    def open(self, fragment: str = "") -> None:
        self.page.goto(f"{self.base}/{fragment}")
        try:
            self.page.wait_for_function("() => document.body.dataset.loaded")
        except Exception as exc:
            raise AssertionError(f"the dashboard did not load: {self.state()}") from exc

    def state(self) -> str:
        """What the page shows and logged, for failure messages."""
        error = self.page.evaluate("() => document.getElementById('page-error')?.innerText")
        return f"page error {error!r}, errors {self.errors}, console {self.console}"

    def reloaded(self, previous: str | None) -> None:
        """Wait until a new full load of the data finished."""
        self.page.wait_for_function(
            "(prev) => document.body.dataset.loaded && document.body.dataset.loaded !== prev",
            arg=previous,
        )

    def show_window(self, start: str, end: str) -> None:
        """Type a window into the date pickers, apply it and wait for its data."""
        self.page.fill("#start-date", start)
        self.page.fill("#end-date", end)
        before = self.loaded()
        self.page.click("#apply")
        self.reloaded(before)

    def loaded(self) -> str | None:
        value: str | None = self.page.evaluate("() => document.body.dataset.loaded || null")
        return value

    def traces(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.page.evaluate(
            """() => {
                const gd = document.getElementById('level-chart');
                if (!gd.classList.contains('js-plotly-plot')) return [];
                return gd.data.map(t => ({name: t.name, x: t.x, y: t.y, yaxis: t.yaxis || 'y'}));
            }"""
        )
        return result


@pytest.fixture
def watched(browser_context: Any, server: Server) -> Iterator[Watched]:
    page = browser_context.new_page()
    page.set_viewport_size(DESKTOP)
    w = Watched(page, server.base)
    try:
        yield w
        assert not w.errors, f"uncaught errors in the page: {w.errors}"
        foreign = [u for u in w.requests if not u.startswith((server.base, "blob:", "data:"))]
        assert not foreign, f"requests off this origin (no CDN allowed): {foreign}"
    finally:
        page.close()


def _keep(request: pytest.FixtureRequest, path: Path) -> None:
    """Print ``path`` and list it in the run's summary (tests/conftest.py)."""
    print(f"artifact: {path}")
    request.node.user_properties.append(("artifact", str(path)))


def _screenshot(w: Watched, name: str, request: pytest.FixtureRequest) -> Path:
    path = artifacts_dir() / name
    w.page.screenshot(path=str(path), full_page=True)
    _keep(request, path)
    return path


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def _window(server: Server, index: str) -> tuple[str, str]:
    """A window inside the built range: from the 10th trading day to 5 days before the end."""
    rows = server.api("/index-performance", index=index)["data"]
    return rows[10]["date"], rows[-6]["date"]


# ---------------------------------------------------------------------------- tests
def test_pick_an_index_and_a_window_and_see_the_apis_numbers(
    watched: Watched, server: Server, request: pytest.FixtureRequest
) -> None:
    w, page = watched, watched.page
    w.open()
    assert page.title() == "Index Builder dashboard"
    options = page.eval_on_selector_all("#index-select option", "os => os.map(o => o.value)")
    assert sorted(options) == sorted(i["definition"]["id"] for i in server.api("/indices"))
    assert page.input_value("#index-select") == "ew100"

    before = w.loaded()
    page.select_option("#index-select", "ew-tech50")
    w.reloaded(before)
    start, end = _window(server, "ew-tech50")
    w.show_window(start, end)
    assert "index=ew-tech50" in page.url and f"start={start}" in page.url

    perf = server.api("/index-performance", index="ew-tech50", start_date=start, end_date=end)
    traces = w.traces()
    assert [t["name"] for t in traces] == ["ew-tech50", "ew-tech50 drawdown"]
    level, drawdown = traces
    assert level["x"] == [r["date"] for r in perf["data"]]
    assert level["y"] == [r["level"] for r in perf["data"]]  # exactly the API's levels
    assert level["y"][-1] == perf["data"][-1]["level"]
    assert drawdown["yaxis"] == "y2"
    assert min(drawdown["y"]) == pytest.approx(perf["summary"]["max_drawdown"], abs=1e-12)
    label = page.get_attribute("#level-chart", "aria-label") or ""
    assert f"to {perf['data'][-1]['level']:,.2f}" in label

    cards = page.eval_on_selector_all(
        "#cards .card",
        "cs => cs.map(c => [c.dataset.stat, c.dataset.value, c.querySelector('dd').textContent])",
    )
    summary = perf["summary"]
    assert len(cards) == 6
    for stat, value, text in cards:
        expected = summary[stat]
        if expected is None:
            assert value == "" and text == "n/a"
            continue
        assert float(value) == expected, stat
        assert text == (f"{expected:.2f}" if stat == "sharpe" else _pct(expected)), stat

    comp = server.api("/index-composition", index="ew-tech50", date=end)
    rows = page.eval_on_selector_all(
        "#composition-table tbody tr",
        "rs => rs.map(r => [r.dataset.symbol, r.querySelector('td[data-key=weight]').dataset.value,"
        " r.querySelector('.weight-value').textContent])",
    )
    assert [r[0] for r in rows] == [c["symbol"] for c in comp["constituents"]]
    for (_, weight, text), constituent in zip(rows, comp["constituents"], strict=True):
        assert float(weight) == constituent["weight"] and text == _pct(constituent["weight"])
    assert page.get_attribute("#composition-table", "data-date") == comp["effective_date"]
    sectors = page.eval_on_selector_all(
        "#sector-table tbody tr", "rs => rs.map(r => [r.dataset.sector, +r.dataset.weight])"
    )
    expected_sectors: dict[str, float] = {}
    for c in comp["constituents"]:
        expected_sectors[c["sector"]] = expected_sectors.get(c["sector"], 0.0) + c["weight"]
    assert dict(sectors) == pytest.approx(expected_sectors)
    assert page.locator("#sector-chart.js-plotly-plot .bars").count() == 1

    changes = server.api("/composition-changes", index="ew-tech50", start_date=start, end_date=end)
    dates = page.eval_on_selector_all("#timeline li", "ls => ls.map(l => l.dataset.date)")
    assert dates == [c["date"] for c in reversed(changes["changes"])][: len(dates)]
    if changes["changes"]:
        newest = changes["changes"][-1]
        text = page.inner_text("#timeline li:first-child")
        assert f"Entered ({len(newest['entered'])})" in text
        assert f"Exited ({len(newest['exited'])})" in text

    health = page.inner_text("#health")
    assert "Redis up" in health and "run 1 succeeded" in health
    _screenshot(w, "dashboard-desktop.png", request)


def test_sort_the_composition_by_a_column(watched: Watched, server: Server) -> None:
    w, page = watched, watched.page
    w.open()
    comp = server.api("/index-composition", index="ew100")["constituents"]

    def column(selector: str) -> list[str]:
        return page.eval_on_selector_all(selector, "cs => cs.map(c => c.textContent)")

    assert page.get_attribute("th[data-key=rank]", "aria-sort") == "ascending"
    page.click("th[data-key=symbol] button")
    assert page.get_attribute("th[data-key=symbol]", "aria-sort") == "ascending"
    assert page.get_attribute("th[data-key=rank]", "aria-sort") is None
    assert column("#composition-table tbody th") == sorted(c["symbol"] for c in comp)
    page.click("th[data-key=market_cap] button")
    page.click("th[data-key=market_cap] button")
    assert page.get_attribute("th[data-key=market_cap]", "aria-sort") == "descending"
    caps = page.eval_on_selector_all(
        "#composition-table td[data-key=market_cap]", "cs => cs.map(c => +c.dataset.value)"
    )
    assert caps == sorted((c["market_cap"] for c in comp), reverse=True)


def test_comparison_mode_overlays_indices_rebased_to_100(watched: Watched, server: Server) -> None:
    w, page = watched, watched.page
    w.open()
    page.check("#compare-toggle")
    assert page.is_visible("#compare-list")
    page.check("#compare-ew-tech50")
    page.wait_for_function("() => document.getElementById('level-chart').data.length === 4")
    traces = [t for t in w.traces() if t["yaxis"] == "y"]
    assert [t["name"] for t in traces] == ["ew100 (rebased)", "ew-tech50 (rebased)"]
    for trace in traces:
        index = trace["name"].split()[0]
        levels = [r["level"] for r in server.api("/index-performance", index=index)["data"]]
        assert trace["y"][0] == 100
        assert trace["y"][-1] == pytest.approx(levels[-1] / levels[0] * 100, rel=1e-12)
    assert page.locator("#comparison-summary tbody tr").count() == 2
    assert "compare=ew-tech50" in page.url
    # reloading the bookmark restores the comparison
    page.reload()
    page.wait_for_function("() => document.body.dataset.loaded")
    page.wait_for_function("() => document.getElementById('level-chart').data.length === 4")
    assert page.is_checked("#compare-toggle") and page.is_checked("#compare-ew-tech50")


def test_build_synchronously_and_export_a_valid_workbook(
    watched: Watched, server: Server, request: pytest.FixtureRequest
) -> None:
    w, page = watched, watched.page
    w.open()
    page.fill("#api-key", KEY)
    assert page.evaluate("() => sessionStorage.getItem('index-builder.api-key')") == KEY
    page.click("#build-button")
    page.wait_for_selector("#action-status[data-outcome=built]")
    status = page.inner_text("#action-status")
    build = server.api("/indices/ew100")["build"]
    assert status.startswith("Built ew100 through ") and f"version {build['version']}" in status
    assert page.is_hidden("#action-error")

    start, end = _window(server, "ew100")
    w.show_window(start, end)
    with page.expect_download() as info:
        page.click("#export-button")
    download = info.value
    saved = artifacts_dir() / download.suggested_filename
    download.save_as(saved)
    _keep(request, saved)
    assert download.suggested_filename.endswith(".xlsx")
    book = openpyxl.load_workbook(io.BytesIO(saved.read_bytes()), read_only=True)
    assert book.sheetnames[:4] == ["Summary", "Performance", "Compositions", "Changes"]
    perf = server.api("/index-performance", index="ew100", start_date=start, end_date=end)
    sheet_rows = list(book["Performance"].iter_rows(min_row=2, values_only=True))
    assert len(sheet_rows) == len(perf["data"])
    first = sheet_rows[0][0]
    assert (first.date() if isinstance(first, dt.datetime) else first) == dt.date.fromisoformat(
        start
    )
    page.wait_for_selector("#action-status[data-outcome=exported]")


def test_async_build_shows_job_progress_to_completion(watched: Watched, server: Server) -> None:
    w, page = watched, watched.page
    w.open()
    page.fill("#api-key", KEY)
    page.check("#build-async")
    page.click("#build-button")
    page.wait_for_selector("#job[data-status=succeeded]")
    assert page.is_visible("#job-progress")
    assert page.evaluate("() => document.getElementById('job-progress').value") == 1
    job_id = page.get_attribute("#job", "data-job-id")
    assert job_id
    job = server.api(f"/jobs/{job_id}")
    assert job["status"] == "succeeded" and job["progress"] == 1
    text = page.inner_text("#job-status")
    assert text.endswith("succeeded (100.00%)")
    assert f"version {job['result']['version']}" in page.inner_text("#action-status")


def test_api_problems_are_shown_with_their_title_and_detail(
    watched: Watched, server: Server
) -> None:
    w, page = watched, watched.page
    w.open()
    page.fill("#api-key", "")
    expected = server.http.post("/build-index", json={"index": "ew100", "async": False})
    assert expected.status_code == 401
    problem = expected.json()
    page.click("#build-button")
    page.wait_for_selector("#action-error:not([hidden])")
    assert page.inner_text("#action-error .problem-title") == problem["title"] == "Unauthorized"
    assert page.inner_text("#action-error .problem-detail") == problem["detail"]
    assert "HTTP 401" in page.inner_text("#action-error")
    assert page.get_attribute("#action-error", "role") == "alert"

    # a window ending before it starts is refused in the page, before any request
    page.fill("#start-date", "2023-03-10")
    page.fill("#end-date", "2023-02-01")
    page.click("#apply")
    page.wait_for_selector("#page-error:not([hidden])")
    assert "Invalid date range" in page.inner_text("#page-error")
    # reads with an unknown key: the API's 401 problem, title and detail
    page.fill("#api-key", "not-a-valid-key-at-all")
    page.select_option("#index-select", "ew-tech50")
    page.wait_for_selector("#page-error .problem-title")
    bad = server.http.get("/indices", headers={"X-API-Key": "not-a-valid-key-at-all"}).json()
    page.wait_for_function(
        "(d) => document.querySelector('#page-error .problem-detail')?.textContent === d",
        arg=bad["detail"],
    )
    assert page.inner_text("#page-error .problem-title") == bad["title"]
    # a good key: what was refused is asked for again
    page.fill("#api-key", KEY)
    page.press("#api-key", "Enter")
    page.wait_for_selector("#page-error", state="hidden")
    page.wait_for_selector("#composition-table tbody tr")  # the refused reads, answered


def test_without_the_chart_library_the_numbers_still_show(watched: Watched, server: Server) -> None:
    w, page = watched, watched.page
    page.route("**/static/vendor/plotly.min.js*", lambda route: route.abort())
    w.open()
    page.wait_for_selector("#page-error:not([hidden])")
    assert "could not be loaded" in page.inner_text("#page-error")
    summary = server.api("/index-performance", index="ew100")["summary"]
    total = page.get_attribute("#cards .card[data-stat=total_return]", "data-value")
    assert total is not None and float(total) == summary["total_return"]
    rows = page.locator("#composition-table tbody tr").count()
    assert rows == server.api("/index-composition", index="ew100")["total"]


def test_keyboard_reaches_every_control(watched: Watched) -> None:
    w, page = watched, watched.page
    w.open()
    page.focus("body")
    reached: list[str] = []
    outlines: dict[str, str] = {}
    for _ in range(120):
        page.keyboard.press("Tab")
        where = page.evaluate(
            """() => {
                const a = document.activeElement;
                const th = a.closest('th');
                const id = a.id || (th ? `th:${th.dataset.key}` : a.className || a.tagName);
                return [id, getComputedStyle(a).outlineStyle];
            }"""
        )
        reached.append(where[0])
        outlines[where[0]] = where[1]
        if where[0] == "export-button":
            break
    wanted = [
        "skip-link",
        "index-select",
        "start-date",
        "end-date",
        "apply",
        "compare-toggle",
        "composition-date",
        "th:symbol",
        "th:weight",
        "timeline",
        "api-key",
        "build-async",
        "build-button",
        "export-format",
        "export-button",
    ]
    missing = [c for c in wanted if c not in reached]
    assert not missing, f"not reached by Tab: {missing} (order: {reached})"
    assert reached.index("index-select") < reached.index("build-button")
    for control in ("index-select", "apply", "build-button", "th:weight"):
        assert outlines[control] != "none", f"no visible focus on {control}"
    # operate a sortable header with the keyboard
    page.focus("th[data-key=weight] button")
    page.keyboard.press("Enter")
    assert page.get_attribute("th[data-key=weight]", "aria-sort") == "ascending"
    # every form control has a label
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select')]
            .filter(e => !e.labels || e.labels.length === 0).map(e => e.id)"""
    )
    assert unlabelled == []


def test_phone_width_has_no_horizontal_overflow(
    watched: Watched, request: pytest.FixtureRequest
) -> None:
    w, page = watched, watched.page
    page.set_viewport_size(PHONE)
    w.open()
    page.wait_for_selector("#level-chart.js-plotly-plot")
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1] == PHONE["width"], widths
    columns = page.evaluate(
        "() => getComputedStyle(document.querySelector('main')).gridTemplateColumns"
    )
    assert len(columns.split()) == 1, columns
    boxes = page.eval_on_selector_all(
        "main > *:not([hidden])",
        "es => es.map(e => [e.id || e.className, e.getBoundingClientRect().right])",
    )
    assert all(right <= PHONE["width"] for _, right in boxes), boxes
    table = page.evaluate(
        "() => { const e = document.getElementById('composition-wrap');"
        " return [e.scrollWidth, e.clientWidth]; }"
    )
    assert table[0] <= table[1], f"the composition table scrolls sideways on a phone: {table}"
    _screenshot(w, "dashboard-phone.png", request)


def test_build_all_lists_every_outcome_with_the_failure_first(
    watched: Watched, server: Server, request: pytest.FixtureRequest
) -> None:
    w, page = watched, watched.page
    unbuildable = {"id": "dash-none", "name": "Nothing", "top_n": 5, "universe": {"sectors": ["-"]}}
    headers = {"X-API-Key": KEY}
    assert server.http.post("/indices", json=unbuildable, headers=headers).status_code == 201
    try:
        w.open()
        page.fill("#api-key", KEY)
        page.click("#build-all-button")
        page.wait_for_selector("#action-status[data-outcome=built-all]", timeout=120_000)
        job = server.api(f"/jobs/{page.get_attribute('#job', 'data-job-id')}")
        assert job["status"] == "succeeded" and job["result"]["failed"] == 1
        assert page.get_attribute("#job", "data-status") == "succeeded"
        rows = page.eval_on_selector_all(
            "#build-outcomes-table tbody tr",
            "rs => rs.map(r => [r.dataset.index, r.dataset.outcome,"
            " [...r.cells].map(c => c.textContent)])",
        )
        outcomes = job["result"]["outcomes"]
        assert len(rows) == len(outcomes)
        index, outcome, cells = rows[0]  # the failure first
        assert (index, outcome) == ("dash-none", "failed")
        assert cells[:4] == ["dash-none", "failed", "", ""]
        reason = next(o["reason"] for o in outcomes if o["index"] == "dash-none")
        assert cells[4] == reason and "no eligible security" in reason
        by_index = {o["index"]: o for o in outcomes}
        for index, outcome, cells in rows[1:]:
            assert outcome == by_index[index]["outcome"] != "failed"
            assert cells[2:4] == [by_index[index]["mode"], by_index[index]["end_date"]]
        marker = page.evaluate(
            """() => {
                const row = document.querySelector('#build-outcomes-table tr[data-outcome=failed]');
                const th = getComputedStyle(row.cells[0]);
                return [th.borderLeftStyle, th.borderLeftWidth,
                        getComputedStyle(row.cells[1], '::before').content];
            }"""
        )
        assert marker == ["solid", "6px", '"✗ "']
        status = page.inner_text("#action-status")
        assert status.endswith(f"{job['result']['unchanged']} unchanged, 1 failed (dash-none).")
        assert page.get_attribute("#action-status", "data-build-outcome") == "failed"
        assert page.is_hidden("#action-error")
        _screenshot(w, "dashboard-build-all.png", request)
    finally:
        server.http.delete("/indices/dash-none", headers=headers)


# ---------------------------------------------------------------------------- API docs
def _offline_page(browser_context: Any, server: Server) -> tuple[Any, list[str], list[str]]:
    """A page whose requests off 127.0.0.1 are refused (the machine has no internet);
    with the URLs it asked for and the errors it met."""
    page = browser_context.new_page()
    asked: list[str] = []
    errors: list[str] = []

    def only_local(route: Any) -> None:
        asked.append(route.request.url)
        if route.request.url.startswith(f"{server.base}/"):
            route.continue_()
        else:
            route.abort("internetdisconnected")

    page.route("**/*", only_local)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    return page, asked, errors


def test_the_api_docs_render_offline(
    browser_context: Any, server: Server, request: pytest.FixtureRequest
) -> None:
    """Swagger UI at /docs, from this server only: the operations list is drawn, styled."""
    page, asked, errors = _offline_page(browser_context, server)
    try:
        page.goto(f"{server.base}/docs")
        build = page.locator(".opblock.opblock-post", has_text="/build-index").first
        build.wait_for(state="visible")
        summary = build.locator(".opblock-summary").inner_text()
        assert "POST" in summary and "/build-index" in summary
        # every operation of the OpenAPI document has its block
        spec = server.api("/openapi.json")
        operations = sum(len(methods) for methods in spec["paths"].values())
        assert page.locator(".opblock").count() == operations
        # swagger-ui.css applied: a POST block has its green border
        border = build.evaluate("e => getComputedStyle(e).borderTopColor")
        assert border == "rgb(73, 204, 144)", border
        build.locator(".opblock-summary-control").click()  # expands with its parameters
        page.locator(".opblock-body").first.wait_for(state="visible")
        path = artifacts_dir() / "api-docs.png"
        page.screenshot(path=str(path))
        _keep(request, path)
        foreign = [u for u in asked if not u.startswith(f"{server.base}/")]
        assert not foreign, f"the docs page asked off this server: {foreign}"
        assert not errors, errors
    finally:
        page.close()


def test_redoc_renders_offline(browser_context: Any, server: Server) -> None:
    """ReDoc at /redoc, from this server only (its sidebar's Redocly logo, an image on
    its CDN, is refused by the page's Content-Security-Policy and left out)."""
    page, asked, errors = _offline_page(browser_context, server)
    try:
        page.goto(f"{server.base}/redoc")
        heading = "Build an index (incrementally) at request time"
        page.get_by_role("heading", name=heading).wait_for()  # an operation's section
        foreign = [u for u in asked if not u.startswith(f"{server.base}/")]
        assert not foreign, f"the ReDoc page asked off this server: {foreign}"
        logo = "cdn.redoc.ly/redoc/logo-mini.svg"
        assert all(logo in e for e in errors), errors
    finally:
        page.close()
