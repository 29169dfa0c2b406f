"""Every command, port, path, probe and variable that the Dockerfile, docker-compose.yml,
the Kubernetes manifests and the nginx template name exists in the app: CLI commands
and options in the typer app, paths in the FastAPI routes, ``INDEX_BUILDER_*``
variables in ``settings.Settings`` (their values valid), ports equal to the serve
default and the metrics scrape."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from pydantic import ValidationError

from index_builder.api.dashboard import NPM_BUNDLE
from index_builder.ops.middleware import _VALID_REQUEST_ID
from index_builder.settings import Settings

from deploy_files import (
    APP_IMAGE,
    DEPLOY,
    ROOT,
    Instruction,
    cli_problems,
    dockerfile,
    settings_fields,
)

Manifests = dict[str, list[dict[str, Any]]]
DEFAULTS = Settings(_env_file=None)  # type: ignore[call-arg]
PORT = DEFAULTS.api_port
NGINX = (DEPLOY / "nginx" / "nginx.conf").read_text()


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services that run the app's image."""
    return {
        name: service
        for name, service in compose["services"].items()
        if str(service.get("image", "")).split(":")[0] == APP_IMAGE
    }


def app_containers(manifests: Manifests) -> dict[str, dict[str, Any]]:
    """Every container of the app's image in the gke rendering, by ``Kind/name``."""
    found = {}
    for r in manifests["gke"]:
        spec = r.get("spec", {})
        pod = (
            spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
            or spec.get("template", {}).get("spec")
            or {}
        )
        for container in pod.get("containers", []):
            if APP_IMAGE in container["image"]:
                found[f"{r['kind']}/{r['metadata']['name']}"] = container
    return found


def command_lines(compose: dict[str, Any], manifests: Manifests) -> dict[str, list[str]]:
    """Every ``index-builder ...`` command line the deployment files run, by where."""
    lines: dict[str, list[str]] = {}
    for inst in dockerfile():
        if inst.keyword in ("CMD", "ENTRYPOINT") or "index-builder" in inst.arguments:
            words = inst.exec_form() if inst.keyword in ("CMD", "ENTRYPOINT") else []
            if words[:1] == ["index-builder"]:
                lines[f"Dockerfile {inst.keyword}"] = words
    for name, service in app_services(compose).items():
        lines[f"docker-compose.yml {name}"] = list(service["command"])
    for where, container in app_containers(manifests).items():
        lines[f"kubernetes {where}"] = [*container.get("command", []), *container["args"]]
    return lines


def test_every_command_the_deployment_runs_exists_in_the_cli(
    compose: dict[str, Any], manifests: Manifests
) -> None:
    lines = command_lines(compose, manifests)
    commands = {tuple(words[:2]) for words in lines.values()}
    assert {("index-builder", "serve"), ("index-builder", "worker")} <= commands
    missing: dict[str, list[str]] = {}
    for where, words in lines.items():
        for problem in cli_problems(words):
            missing.setdefault(problem, []).append(where)
    assert not missing, "not in cli/main.py yet: " + "; ".join(
        f"{problem} (named by {', '.join(wheres)})" for problem, wheres in missing.items()
    )


def test_the_cli_check_can_fail() -> None:
    assert cli_problems(["index-builder", "serve", "--host", "0.0.0.0"]) == []
    assert cli_problems(["index-builder", "no-such-command"]) == [
        "command 'index-builder no-such-command'"
    ]
    assert cli_problems(["index-builder", "serve", "--no-such-option", "1"]) == [
        "option '--no-such-option' of 'index-builder serve'"
    ]
    assert cli_problems(["index-builder", "lake", "compact"]) == []


def environments(compose: dict[str, Any], manifests: Manifests) -> dict[str, dict[str, str]]:
    """Every set of environment variables the deployment gives the app, by where."""
    found: dict[str, dict[str, str]] = {}
    env: dict[str, str] = {}
    for inst in dockerfile():
        if inst.keyword == "ENV":
            env |= dict(re.findall(r"(\w+)=(\S+)", inst.arguments))
    found["Dockerfile ENV"] = env
    for name, service in app_services(compose).items():
        found[f"docker-compose.yml {name}"] = {
            k: str(v) for k, v in service.get("environment", {}).items()
        }
    for r in manifests["gke"]:
        if r["kind"] == "ConfigMap" and r["metadata"]["name"] == "index-builder-config":
            found["ConfigMap index-builder-config"] = dict(r["data"])
        if r["kind"] == "Secret":
            found[f"Secret {r['metadata']['name']}"] = dict(r.get("stringData", {}))
    for where, container in app_containers(manifests).items():
        found[f"kubernetes {where}"] = {e["name"]: e.get("value", "") for e in container["env"]}
    return found


def test_every_variable_is_a_setting_and_every_value_is_valid(
    compose: dict[str, Any], manifests: Manifests
) -> None:
    known = settings_fields()
    unknown, invalid = {}, {}
    for where, env in environments(compose, manifests).items():
        names = {n for n in env if n.startswith("INDEX_BUILDER_")}
        if names - known:
            unknown[where] = sorted(names - known)
        values = {
            n[len("INDEX_BUILDER_") :].lower(): v
            for n, v in env.items()
            if n in names & known and "${" not in v
        }
        try:
            Settings(_env_file=None, **values)  # type: ignore[call-arg]
        except ValidationError as exc:
            invalid[where] = str(exc)
    assert not unknown, f"not fields of settings.Settings: {unknown}"
    assert not invalid, invalid
    # the check can fail
    assert "INDEX_BUILDER_NO_SUCH_SETTING" not in known
    with pytest.raises(ValidationError):
        Settings(_env_file=None, trusted_proxies="nginx")  # type: ignore[call-arg]


def probe_paths(manifests: Manifests) -> dict[str, str]:
    paths = {}
    for where, container in app_containers(manifests).items():
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container.get(probe, {}).get("httpGet")
            if get:
                paths[f"{where} {probe}"] = get["path"]
    return paths


def healthcheck_url(inst: Instruction) -> str:
    """The URL the Dockerfile's HEALTHCHECK requests."""
    (url,) = re.findall(r"http://127\.0\.0\.1:\{port\}(/[\w/]+)", inst.arguments)
    return str(url)


def test_every_path_is_a_route_of_the_app(
    routes: set[str], compose: dict[str, Any], manifests: Manifests
) -> None:
    (healthcheck,) = [i for i in dockerfile() if i.keyword == "HEALTHCHECK"]
    paths = {"Dockerfile HEALTHCHECK": healthcheck_url(healthcheck)}
    paths |= probe_paths(manifests)
    nginx_check = compose["services"]["nginx"]["healthcheck"]["test"][-1]
    paths["docker-compose.yml nginx healthcheck"] = urlparse(nginx_check).path
    for r in manifests["gke"]:
        if r["kind"] == "PodMonitoring":
            for endpoint in r["spec"]["endpoints"]:
                paths[f"PodMonitoring/{r['metadata']['name']}"] = endpoint["path"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-compose.yml").read_text())
    for job in prometheus["scrape_configs"]:
        paths[f"prometheus-compose.yml {job['job_name']}"] = job["metrics_path"]
    assert {"/health/live", "/health/ready", "/metrics"} <= set(paths.values())
    missing = {where: path for where, path in paths.items() if path not in routes}
    assert not missing, f"no such route: {missing}"
    assert "/health/no-such-probe" not in routes  # the check can fail


def test_ports_agree_with_the_serve_default(compose: dict[str, Any], manifests: Manifests) -> None:
    instructions = dockerfile()
    (expose,) = [int(i.arguments) for i in instructions if i.keyword == "EXPOSE"]
    env = environments(compose, manifests)
    assert expose == PORT == int(env["Dockerfile ENV"]["INDEX_BUILDER_API_PORT"])
    api = compose["services"]["api"]
    command = api["command"]
    assert int(command[command.index("--port") + 1]) == PORT
    nginx = compose["services"]["nginx"]["environment"]["API_SERVERS"]
    assert {int(server.rsplit(":", 1)[1]) for server in nginx.split()} == {PORT}
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-compose.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert {sd["port"] for sd in job["dns_sd_configs"]} == {PORT}
    assert {name for sd in job["dns_sd_configs"] for name in sd["names"]} == {"api"}

    for where, container in app_containers(manifests).items():
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        if "--port" in container["args"]:
            assert int(container["args"][container["args"].index("--port") + 1]) == PORT
            assert ports == {"http": PORT}, where
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container.get(probe, {}).get("httpGet")
            if get:
                assert ports.get(get["port"], get["port"]) == PORT, (where, probe)
    resources = manifests["gke"]
    config = next(r for r in resources if r["metadata"]["name"] == "index-builder-config")
    assert int(config["data"]["INDEX_BUILDER_API_PORT"]) == PORT
    service = next(r for r in resources if r["kind"] == "Service")
    (service_port,) = service["spec"]["ports"]
    monitoring = next(r for r in resources if r["kind"] == "PodMonitoring")
    assert {e["port"] for e in monitoring["spec"]["endpoints"]} == {service_port["targetPort"]}
    assert service_port["targetPort"] == "http"
    # the PodMonitoring's name is the job label the alert rules match
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert f'job="{monitoring["metadata"]["name"]}"' in alerts
    assert f'job="{job["job_name"]}"' in alerts


def test_dockerfile_is_multi_stage_slim_non_root_with_the_js_built(
    manifests: Manifests,
) -> None:
    instructions = dockerfile()
    stages = [i for i in instructions if i.keyword == "FROM"]
    assert len(stages) >= 3
    last = stages[-1].stage
    runtime = [i for i in instructions if i.stage == last]
    (user,) = [i.arguments for i in runtime if i.keyword == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    uid = int(user.split(":")[0])
    for where, container in app_containers(manifests).items():
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
    pods = [r for r in manifests["gke"] if r["kind"] in ("Deployment", "CronJob")]
    for r in pods:
        spec = r["spec"].get("jobTemplate", r)["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsUser"] == uid, r["metadata"]["name"]
    assert any(i.keyword == "HEALTHCHECK" for i in runtime)
    args = {
        i.arguments.split("=", 1)[0].split()[-1]: i.arguments
        for i in instructions
        if i.keyword == "ARG"
    }
    assert "slim" in args["PYTHON_IMAGE"]
    assert "${PYTHON_IMAGE}" in stages[-1].arguments

    # the dashboard's JS: npm ci from the lock file in a build stage, its bundle copied
    js_stage = next(s for s in stages if " AS js" in s.arguments)
    js = [i for i in instructions if i.stage == js_stage.stage]
    copied = " ".join(i.arguments for i in js if i.keyword == "COPY")
    assert "package.json" in copied and "package-lock.json" in copied
    assert any("npm ci" in i.arguments for i in js if i.keyword == "RUN")
    copies = [i.exec_form() for i in runtime if i.keyword == "COPY"]
    source_dir = next(c[-1] for c in copies if c[-2] == "/app/src")
    bundle = next(c[-1] for c in copies if "node_modules" in c[-2])
    # api/dashboard.py looks for the bundle three folders above the package: with the
    # package at /app/src/index_builder that is /app/node_modules/...
    relative = NPM_BUNDLE.relative_to(ROOT)
    assert Path(bundle) == Path(source_dir).parent / relative

    # what it installs and copies exists, and the build context keeps it
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (install,) = [i.arguments for i in instructions if "pip install" in i.arguments]
    extras = re.search(r"\.\[([\w,]+)\]", install)
    assert extras is not None
    assert set(extras.group(1).split(",")) <= set(pyproject["project"]["optional-dependencies"])
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for inst in instructions:
        if inst.keyword == "COPY" and "--from" not in inst.arguments:
            for source in inst.exec_form()[:-1]:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") not in ignored, source


def test_compose_runs_the_whole_deployment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {
        "nginx",
        "api",
        "worker",
        "scheduler",
        "redis",
        "minio",
        "prometheus",
        "alertmanager",
        "grafana",
    } <= services.keys()
    assert services["api"]["deploy"]["replicas"] == 3
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)
    app = services["api"]["environment"]
    assert app["INDEX_BUILDER_STORAGE"] == "iceberg"
    assert app["INDEX_BUILDER_WAREHOUSE"].startswith("s3://")
    endpoint = urlparse(app["INDEX_BUILDER_S3_ENDPOINT"])
    assert endpoint.hostname in services and endpoint.port == 9000
    catalog = urlparse(app["INDEX_BUILDER_CATALOG_URI"])
    assert catalog.scheme == "postgresql+psycopg2" and catalog.hostname in services
    redis = urlparse(app["INDEX_BUILDER_REDIS_URL"])
    assert redis.hostname in services
    bucket = urlparse(app["INDEX_BUILDER_WAREHOUSE"]).hostname
    assert f"local/{bucket}" in " ".join(services["minio-init"]["entrypoint"])
    # the API trusts X-Forwarded-For from nginx's fixed address only
    (subnet,) = compose["networks"]["backend"]["ipam"]["config"]
    nginx_address = services["nginx"]["networks"]["backend"]["ipv4_address"]
    assert ipaddress.ip_address(nginx_address) in ipaddress.ip_network(subnet["subnet"])
    assert app["INDEX_BUILDER_TRUSTED_PROXIES"] == nginx_address
    # Prometheus loads the repository's rules, Grafana the dashboard and its datasource
    prometheus = " ".join(services["prometheus"]["command"])
    config = re.search(r"--config\.file=/etc/prometheus/(\S+)", prometheus)
    assert config is not None and (DEPLOY / "prometheus" / config.group(1)).is_file()
    rules = yaml.safe_load((DEPLOY / "prometheus" / config.group(1)).read_text())["rule_files"]
    assert rules == ["alerts.yml"]
    grafana = services["grafana"]["volumes"]
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "index-builder.yml").read_text()
    )["providers"][0]
    assert any(v.endswith(f":{provider['options']['path']}:ro") for v in grafana)
    datasource = yaml.safe_load((DEPLOY / "grafana" / "compose-datasource.yml").read_text())
    shipped = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["uid"] == shipped["datasources"][0]["uid"]
    assert urlparse(datasource["datasources"][0]["url"]).hostname == "prometheus"
    alertmanager = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    receivers = {r["name"] for r in alertmanager["receivers"]}
    routes = [alertmanager["route"], *alertmanager["route"].get("routes", [])]
    assert {r["receiver"] for r in routes} <= receivers


def nginx_directive(name: str) -> list[str]:
    """The arguments of every ``name`` directive of the nginx template."""
    return re.findall(rf"^\s*{name}\s+([^;]+);", NGINX, flags=re.M)


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    assert match is not None, value
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[match.group(2)]


def test_nginx_limits_fit_the_app_settings() -> None:
    (body,) = nginx_directive("client_max_body_size")
    assert body == "1m" and DEFAULTS.max_body_bytes == 1 << 20
    (read,) = nginx_directive("proxy_read_timeout")
    assert seconds(read) > DEFAULTS.request_timeout_seconds  # the app's 504 comes first
    upstream = NGINX[NGINX.index("upstream index_builder_api") :]
    idle = re.search(r"keepalive_timeout\s+(\w+);", upstream)
    assert idle is not None and seconds(idle.group(1)) < DEFAULTS.server_keep_alive_seconds
    (header,) = nginx_directive("client_header_timeout")
    assert seconds(header) <= DEFAULTS.server_header_timeout_seconds
    # the request ids nginx passes on are those the app keeps
    (pattern,) = re.findall(r'"~\^(.+)\$"\s+\$http_x_request_id;', NGINX)
    assert pattern == _VALID_REQUEST_ID.pattern.decode()
    (retry,) = nginx_directive("proxy_next_upstream")
    assert "non_idempotent" not in retry and "http_50" not in retry
    assert nginx_directive("proxy_set_header").count("X-Forwarded-For $remote_addr") == 1


def test_the_alert_runbook_has_one_entry_per_rule() -> None:
    rules = {
        rule["alert"]
        for group in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text[text.index("\n## Alert runbook\n") :]
    following = re.search(r"\n## ", section[1:])
    section = section[: following.start() + 1] if following else section
    entries = re.findall(r"^### (\w+) \((page|ticket)\)$", section, flags=re.M)
    assert sorted(name for name, _ in entries) == sorted(rules)
    severities = {
        rule["alert"]: rule["labels"]["severity"]
        for group in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    assert dict(entries) == severities


def test_promtool_accepts_the_compose_prometheus_config() -> None:
    binary = shutil.which("promtool")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: 'make test' installs the Debian package prometheus")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    config = DEPLOY / "prometheus" / "prometheus-compose.yml"
    result = subprocess.run(
        [binary, "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
