"""deploy/: alert rules (promtool unit tests), the Grafana dashboard and the log collector
config name only metrics the app exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "index-builder.json"
METRIC = re.compile(r"\bindex_builder_[a-z0-9_]+")
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")

CONTRACT = {
    "index_builder_http_requests_total",
    "index_builder_http_request_duration_seconds",
    "index_builder_cache_requests_total",
    "index_builder_rate_limited_total",
    "index_builder_rate_limiter_degraded",
    "index_builder_auth_failures_total",
    "index_builder_build_duration_seconds",
    "index_builder_build_failures_total",
    "index_builder_export_duration_seconds",
    "index_builder_export_failures_total",
    "index_builder_ingest_rows",
    "index_builder_last_ingest_success",
    "index_builder_last_ingest_status",
    "index_builder_last_ingest_timestamp_seconds",
    "index_builder_data_age_seconds",
    "index_builder_data_stale",
    "index_builder_last_build_success",
    "index_builder_redis_up",
    "index_builder_provider_errors_total",
    "index_builder_circuit_state",
    "index_builder_feature_flag",
}


def promtool() -> str:
    """The promtool binary; skipped when missing outside CI, a failure in CI."""
    binary = shutil.which("promtool")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: 'make test' installs the Debian package prometheus")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return binary


def metric_names(text: str) -> set[str]:
    """The ``index_builder_*`` metric names in PromQL text (histogram suffixes removed)."""
    return {HISTOGRAM_SUFFIX.sub("", name) for name in METRIC.findall(text)}


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


@pytest.fixture
def exported(client: TestClient, redis_server: RedisServer) -> set[str]:
    """Every metric name the running app exports (single process, Redis up, data built)."""
    client.get("/index-performance", params={"index": "ew100"})
    text = client.get("/metrics").text
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    names |= {line.split("{")[0].split()[0] for line in text.splitlines() if line[:1].isalpha()}
    return {HISTOGRAM_SUFFIX.sub("", n) for n in names if n.startswith("index_builder_")}


def test_promtool_rule_unit_tests_pass() -> None:
    binary = promtool()
    result = subprocess.run(
        [binary, "test", "rules", "alerts_test.yml"],
        cwd=DEPLOY / "prometheus",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    binary = promtool()
    config = DEPLOY / "prometheus" / "prometheus.yml"
    result = subprocess.run(
        [binary, "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_is_unit_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    rules = set(rule_expressions())
    assert rules == firing, f"never tested firing: {rules - firing}"
    assert rules == quiet, f"never tested quiet: {rules - quiet}"


def test_the_issue_alerts_exist() -> None:
    rules = rule_expressions()
    wanted = {
        "IndexBuilderDown": "up{",
        "IndexBuilderHigh5xxRatio": 'status=~"5.."',
        "IndexBuilderHighP99Latency": "histogram_quantile(0.99",
        "IndexBuilderDataStale": "index_builder_data_stale",
        "IndexBuilderIngestionFailed": "index_builder_last_ingest_success",
        "IndexBuilderBuildFailed": "index_builder_last_build_success",
        "IndexBuilderCircuitOpen": "index_builder_circuit_state == 2",
        "IndexBuilderRedisDown": "index_builder_redis_up == 0",
        "IndexBuilderRateLimitStorm": "index_builder_rate_limited_total",
    }
    for name, fragment in wanted.items():
        assert fragment in rules[name], name


def test_rules_and_panels_name_only_exported_metrics(exported: set[str]) -> None:
    assert exported >= CONTRACT, f"not exported: {CONTRACT - exported}"
    used = {name: metric_names(expr) for name, expr in rule_expressions().items()}
    dashboard = json.loads(DASHBOARD.read_text())
    for i, expr in enumerate(dashboard_expressions(dashboard)):
        used[f"panel target {i}"] = metric_names(expr)
    unknown = {where: names - exported for where, names in used.items() if names - exported}
    assert not unknown, f"metrics that the app does not export: {unknown}"
    # the check can fail
    assert metric_names("rate(index_builder_no_such_thing_bucket[5m])") - exported


def test_dashboard_covers_the_metrics_and_uses_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "index-builder.yml").read_text()
    )["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "index-builder"
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
    shown = set().union(*(metric_names(e) for e in dashboard_expressions(dashboard)))
    missing = CONTRACT - shown
    assert not missing, f"no panel shows {missing}"


def test_vector_config_parses_json_lines_and_ships_them() -> None:
    config = tomllib.loads((DEPLOY / "logging" / "vector.toml").read_text())
    sources, transforms, sinks = config["sources"], config["transforms"], config["sinks"]
    (parse,) = transforms.values()
    assert parse["type"] == "remap" and "parse_json" in parse["source"]
    assert set(parse["inputs"]) <= set(sources)
    for sink in sinks.values():
        assert sink["inputs"] == [next(iter(transforms))]
