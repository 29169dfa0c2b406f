"""The dashboard's export button on a long window: an export job, followed, then downloaded.

A real ``index-builder serve`` (INDEX_BUILDER_ASYNC_EXPORT_DAYS=5, so the 60-day
market's whole range is a job) and headless Chromium, like
``test_dashboard_browser.py`` (skipped, or failed under CI, the same way).
"""

from __future__ import annotations

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

TIMEOUT_MS = 20_000


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (CI must run the browser tests: make system-deps installs it)")
    pytest.skip(reason)


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        _unavailable("no chromium executable (Debian package 'chromium')")
    return path


@pytest.fixture(scope="module")
def server(built_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("dashboard-export-job")
    database = folder / "dashboard.duckdb"
    shutil.copy(built_template, database)
    env = {
        "INDEX_BUILDER_DATABASE": str(database),
        "INDEX_BUILDER_DUCKDB_THREADS": "2",
        "INDEX_BUILDER_ASYNC_EXPORT_DAYS": "5",
        "INDEX_BUILDER_LOG_FORMAT": "json",
    }
    served = ServeProcess(folder / "serve.log", env, options=["-q"], cwd=folder)
    try:
        served.wait_ready()
        yield served.base
    finally:
        served.stop()


def test_a_long_window_is_exported_as_a_job_and_downloaded(server: str, tmp_path: Path) -> None:
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--disable-gpu"]
        )
        try:
            page: Any = browser.new_page(accept_downloads=True)
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{server}/")
            page.wait_for_function("() => document.body.dataset.loaded")
            with page.expect_download() as info:
                page.click("#export-button")  # the whole built range: 60 trading days
            download = info.value
            saved = tmp_path / download.suggested_filename
            download.save_as(saved)
            page.wait_for_selector("#action-status[data-outcome=exported]")
            assert page.get_attribute("#job", "data-status") == "succeeded"
            assert "Export job" in page.inner_text("#job-label")
            assert errors == []
        finally:
            browser.close()
    assert download.suggested_filename.startswith("ew100_") and saved.suffix == ".xlsx"
    book = openpyxl.load_workbook(io.BytesIO(saved.read_bytes()), read_only=True)
    levels = [row[1] for row in book["Performance"].iter_rows(min_row=2, values_only=True)]
    perf = httpx.get(f"{server}/index-performance", params={"index": "ew100"}).json()["data"]
    assert levels == [p["level"] for p in perf]
