"""Page load of the dashboard (``GET /``) in headless Chromium, on loopback.

    python bench/dashboard.py [--cold 8] [--warm 8]

Set-up: the default synthetic market of ``bench/api.py`` (3000 symbols x 504 days,
every built-in index built, in ``bench/data/api/``), one ``index-builder serve``
on 127.0.0.1 without Redis (every read from DuckDB: the slower API path), and
Debian's ``chromium`` driven by Playwright. The page loads ``ew100`` over its whole
built range: the level chart of 504 days, 100 constituents, every change.

Loads, each waiting until the dashboard has drawn everything:

* ``first``: the first load after the server started (the server compresses
  plotly.min.js then, once per process);
* ``cold``: ``--cold`` loads, each in a new browser with an empty profile (no HTTP
  cache, no compiled-code cache): a first visit;
* ``warm``: ``--warm`` loads in one profile after two unrecorded loads: the HTTP cache
  holds every asset (hashed URLs, ``immutable``: no request at all) and V8 has
  cached Plotly's compiled code, as for someone who uses the dashboard daily.

From the Navigation Timing and User Timing of each load (milliseconds since the
navigation started): ``response_end`` (the HTML received), ``dom_content_loaded``,
``load_event_end`` (the page and every script, Plotly included, loaded), the
page's marks ``data_shown`` (cards filled from the API), ``chart_drawn`` (the
level chart drawn) and ``ready`` (chart, table, sector chart and changes done),
and the bytes transferred. The target: ``load_event_end`` under 1 s.
Results: ``bench/results/dashboard.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

import index_builder

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api  # bench/api.py: processes, the database

RESULTS = api.HERE / "results" / "dashboard.json"
TARGET_MS = 1000.0
METRICS = ("response_end", "dom_content_loaded", "load_event_end", "data_shown", "chart_drawn")
READY = """() => performance.getEntriesByName('dashboard-ready').length > 0
    || !document.getElementById('page-error').hidden"""
TIMINGS = """() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const mark = (name) => performance.getEntriesByName(name)[0]?.startTime ?? null;
    const bytes = performance.getEntriesByType('resource')
        .reduce((n, r) => n + r.transferSize, nav.transferSize);
    return {
        response_end: nav.responseEnd,
        dom_content_loaded: nav.domContentLoadedEventEnd,
        load_event_end: nav.loadEventEnd,
        data_shown: mark('data-shown'),
        chart_drawn: mark('chart-drawn'),
        ready: mark('dashboard-ready'),
        transferred_bytes: bytes,
        requests: performance.getEntriesByType('resource').length + 1,
    };
}"""


def chromium() -> str:
    """Debian's chromium (Playwright downloads no browser here)."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        sys.exit("chromium is not installed (make system-deps installs it)")
    return path


def load(context: Any, url: str) -> dict[str, Any]:
    """Open ``url`` in a new page of ``context``; wait until the dashboard is ready."""
    page = context.new_page()
    try:
        page.goto(url)
        page.wait_for_function(READY, timeout=60_000)
        error = page.evaluate("() => document.getElementById('page-error').innerText")
        if error:
            raise RuntimeError(f"the dashboard shows an error: {error}")
        page.wait_for_function("() => performance.getEntriesByType('navigation')[0].loadEventEnd")
        timings: dict[str, Any] = page.evaluate(TIMINGS)
        return timings
    finally:
        page.close()


def measure(base: str, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """The first, cold and warm loads of ``base``/."""
    from playwright.sync_api import sync_playwright

    url = f"{base}/"
    executable = chromium()
    runs: dict[str, list[dict[str, Any]]] = {"first": [], "cold": [], "warm": []}
    options: dict[str, Any] = {
        "executable_path": executable,
        "headless": True,
        "viewport": {"width": 1280, "height": 900},
    }
    with sync_playwright() as playwright:
        for i in range(args.cold + 1):
            kind = "first" if i == 0 else "cold"
            with tempfile.TemporaryDirectory(prefix="bench-chromium-") as profile:
                context = playwright.chromium.launch_persistent_context(profile, **options)
                try:
                    runs[kind].append(load(context, url))
                finally:
                    context.close()
            print(f"  {kind} {i or ''}: {fmt(runs[kind][-1])}", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-chromium-") as profile:
            context = playwright.chromium.launch_persistent_context(profile, **options)
            try:
                for _ in range(2):  # fill the HTTP cache, then V8's code cache
                    load(context, url)
                for i in range(args.warm):
                    runs["warm"].append(load(context, url))
                    print(f"  warm {i + 1}: {fmt(runs['warm'][-1])}", flush=True)
            finally:
                context.close()
    return runs


def fmt(run: dict[str, Any]) -> str:
    return (
        f"load {run['load_event_end']:.0f} ms, data {run['data_shown']:.0f} ms, "
        f"chart {run['chart_drawn']:.0f} ms, {run['transferred_bytes'] / 1024:,.0f} KiB"
    )


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, 90th percentile and maximum of every metric over ``runs``."""
    summary: dict[str, Any] = {"runs": len(runs)}
    for metric in (*METRICS, "ready", "transferred_bytes"):
        values = sorted(float(r[metric]) for r in runs if r[metric] is not None)
        if not values:
            continue
        p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
        summary[metric] = {
            "median": round(statistics.median(values), 1),
            "p90": round(p90, 1),
            "max": round(values[-1], 1),
        }
    return summary


def print_table(summaries: dict[str, dict[str, Any]]) -> None:
    print(f"\n{'ms (median / p90)':<22}" + "".join(f"{k:>20}" for k in summaries))
    for metric in (*METRICS, "ready"):
        cells = []
        for summary in summaries.values():
            s = summary.get(metric)
            cells.append(f"{s['median']:.0f} / {s['p90']:.0f}" if s else "-")
        print(f"{metric:<22}" + "".join(f"{c:>20}" for c in cells))
    kib = [s["transferred_bytes"]["median"] / 1024 for s in summaries.values()]
    print(f"{'transferred KiB':<22}" + "".join(f"{k:>20,.0f}" for k in kib))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=8, help="loads with an empty profile")
    parser.add_argument("--warm", type=int, default=8, help="loads with warm caches")
    args = parser.parse_args()
    if args.cold < 1 or args.warm < 1:
        parser.error("need --cold >= 1 and --warm >= 1")
    print(f"dashboard page load: {api.prepare_database()}", flush=True)
    chromium_version = subprocess.run(
        [chromium(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        port = api.free_port()
        base = f"http://{api.HOST}:{port}"
        env = api.server_env(None)
        # serve the code this script imports, whatever the working directory
        source = str(Path(index_builder.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
        with api.running("serve", api.serve_cmd(port), Path(tmp), env) as proc:
            client = httpx.Client(trust_env=False)
            try:
                api.wait_http(client, f"{base}/health/live", proc, "serve")
                page = client.get(f"{base}/")
                if page.status_code != 200 or "js/main.js" not in page.text:
                    raise RuntimeError(f"GET / is not the dashboard: {page.status_code}")
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{api.log_tail(Path(tmp), 'serve')}") from exc
            finally:
                client.close()
            runs = measure(base, args)
    summaries = {kind: summarize(rows) for kind, rows in runs.items()}
    print_table(summaries)
    for kind in ("cold", "warm"):
        median = summaries[kind]["load_event_end"]["median"]
        verdict = "met" if median < TARGET_MS else "NOT met"
        print(f"  {kind}: median load {median:.0f} ms, target < {TARGET_MS:.0f} ms {verdict}")
    RESULTS.parent.mkdir(exist_ok=True)
    payload = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "chromium": chromium_version,
        },
        "page": {"index": api.INDEX, "window": "whole built range", "redis": False},
        "target_ms": TARGET_MS,
        "summary": summaries,
        "runs": runs,
    }
    RESULTS.write_text(json.dumps(payload, indent=2))
    print(f"  results: {RESULTS.relative_to(api.HERE.parent)}")


if __name__ == "__main__":
    main()
