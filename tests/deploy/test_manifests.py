"""deploy/kubernetes: every rendered manifest (kustomize base and the gke overlay) is
valid against the Kubernetes schemas of the cluster version (offline, the schemas of
kubernetes-validate) or, for GKE's custom resources, against a schema shipped in
tests/deploy/schemas; every reference resolves; the Cloud Monitoring alert policies
correspond one to one to the Prometheus rules."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy_files import APP_IMAGE, DEPLOY, KUBERNETES

K8S_VERSION = "1.33.0"
"""The Kubernetes minor of GKE's regular channel the manifests are checked against."""
SCHEMAS = Path(__file__).resolve().parent / "schemas"
CUSTOM = {
    ("monitoring.googleapis.com/v1", "PodMonitoring"): "podmonitoring.json",
    ("networking.gke.io/v1", "ManagedCertificate"): "managedcertificate.json",
}
GKE = KUBERNETES / "overlays" / "gke"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

Manifests = dict[str, list[dict[str, Any]]]


def validate(resource: dict[str, Any]) -> None:
    """Raise when ``resource`` is not valid (strict: unknown fields refused)."""
    key = (resource["apiVersion"], resource["kind"])
    if key in CUSTOM:
        schema = json.loads((SCHEMAS / CUSTOM[key]).read_text())
        jsonschema.validate(resource, schema)
    else:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def named(resources: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def pod_specs(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pod template of every workload, by ``Kind/name``."""
    specs = {}
    for r in resources:
        if r["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            specs[f"{r['kind']}/{r['metadata']['name']}"] = r["spec"]["template"]["spec"]
        elif r["kind"] == "CronJob":
            spec = r["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            specs[f"CronJob/{r['metadata']['name']}"] = spec
    return specs


@pytest.mark.parametrize("name", ["base", "gke"])
def test_every_manifest_is_valid_for_the_cluster_version(manifests: Manifests, name: str) -> None:
    resources = manifests[name]
    kinds = {r["kind"] for r in resources}
    assert {
        "Deployment",
        "Service",
        "Ingress",
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "CronJob",
        "PodMonitoring",
    } <= kinds
    errors = {}
    for resource in resources:
        try:
            validate(resource)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            errors[f"{resource['kind']}/{resource['metadata']['name']}"] = exc.message
    assert not errors, errors


def test_the_validation_refuses_wrong_manifests(manifests: Manifests) -> None:
    resources = manifests["gke"]
    deployment = copy.deepcopy(named(resources, "Deployment")["index-builder-api"])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    hpa = copy.deepcopy(named(resources, "HorizontalPodAutoscaler")["index-builder-api"])
    hpa["spec"]["minReplicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(hpa)
    monitoring = copy.deepcopy(named(resources, "PodMonitoring")["index-builder"])
    monitoring["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitoring)


@pytest.mark.parametrize("name", ["base", "gke"])
def test_every_reference_resolves(manifests: Manifests, name: str) -> None:
    """ConfigMaps, Secrets, claims, service accounts, Services and scale targets that
    a resource names are all defined (the old CronJob named four that were not)."""
    resources = manifests[name]
    defined = {(r["kind"], r["metadata"]["name"]) for r in resources}
    wanted: set[tuple[str, str]] = set()
    for where, spec in pod_specs(resources).items():
        wanted.add(("ServiceAccount", spec["serviceAccountName"]))
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                wanted.add(("ConfigMap", volume["configMap"]["name"]))
            if "secret" in volume:
                wanted.add(("Secret", volume["secret"]["secretName"]))
            if "persistentVolumeClaim" in volume:
                wanted.add(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
        for container in spec["containers"]:
            assert container["image"].split(":")[0].endswith(APP_IMAGE), where
            assert ":" in container["image"], f"{where}: no tag"
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in spec.get("volumes", [])}, where
            for source in container.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in source:
                        wanted.add((kind, source[key]["name"]))
            for env in container.get("env", []):
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if key in env.get("valueFrom", {}):
                        wanted.add((kind, env["valueFrom"][key]["name"]))
    for r in resources:
        if r["kind"] == "HorizontalPodAutoscaler":
            wanted.add((r["spec"]["scaleTargetRef"]["kind"], r["spec"]["scaleTargetRef"]["name"]))
        if r["kind"] == "Ingress":
            wanted.add(("Service", r["spec"]["defaultBackend"]["service"]["name"]))
    assert wanted - defined == set(), f"named but not defined: {wanted - defined}"


def test_selectors_match_their_pods(manifests: Manifests) -> None:
    resources = manifests["gke"]
    deployments = named(resources, "Deployment")
    templates = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}

    def selected(selector: dict[str, str]) -> set[str]:
        return {n for n, labels in templates.items() if selector.items() <= labels.items()}

    for deployment in deployments.values():
        assert selected(deployment["spec"]["selector"]["matchLabels"]) == {
            deployment["metadata"]["name"]
        }
    for pdb in named(resources, "PodDisruptionBudget").values():
        assert len(selected(pdb["spec"]["selector"]["matchLabels"])) == 1, pdb["metadata"]
    service = named(resources, "Service")["index-builder-api"]
    assert selected(service["spec"]["selector"]) == {"index-builder-api"}
    monitoring = named(resources, "PodMonitoring")["index-builder"]
    assert selected(monitoring["spec"]["selector"]["matchLabels"]) == {"index-builder-api"}


def test_api_and_worker_have_probes_resources_budgets_and_autoscalers(
    manifests: Manifests,
) -> None:
    resources = manifests["gke"]
    deployments = named(resources, "Deployment")
    pdbs = named(resources, "PodDisruptionBudget")
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in resources
        if h["kind"] == "HorizontalPodAutoscaler"
    }
    for name in ("index-builder-api", "index-builder-worker"):
        spec = deployments[name]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert {"startupProbe", "readinessProbe"} <= container.keys(), name
        assert container["resources"]["requests"].keys() >= {"cpu", "memory"}, name
        assert container["resources"]["limits"]["memory"], name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert name in pdbs and name in hpas
    api = deployments["index-builder-api"]["spec"]["template"]["spec"]["containers"][0]
    assert "livenessProbe" in api
    hpa = named(resources, "HorizontalPodAutoscaler")["index-builder-api"]
    assert hpa["spec"]["minReplicas"] > pdbs["index-builder-api"]["spec"]["minAvailable"]


def test_gke_overlay_uses_workload_identity_and_a_gcs_warehouse(manifests: Manifests) -> None:
    resources = manifests["gke"]
    account = named(resources, "ServiceAccount")["index-builder"]
    google = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert google.endswith(".iam.gserviceaccount.com")
    config = named(resources, "ConfigMap")["index-builder-config"]["data"]
    assert config["INDEX_BUILDER_STORAGE"] == "iceberg"
    assert config["INDEX_BUILDER_WAREHOUSE"].startswith("gs://")
    assert config["INDEX_BUILDER_CATALOG_URI"].startswith("postgresql+psycopg2://")
    assert all(
        r["metadata"].get("namespace") == "index-builder"
        for r in resources
        if r["kind"] != "Namespace"
    )
    images = {c["image"] for spec in pod_specs(resources).values() for c in spec["containers"]}
    assert len(images) == 1 and next(iter(images)).split("/")[0].endswith("-docker.pkg.dev")


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("alert_policies", GKE / "alert_policies.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_alert_policies_correspond_one_to_one_to_the_prometheus_rules() -> None:
    module = generator()
    rules = {
        rule["alert"]: rule
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
    }
    files = {p.name: json.loads(p.read_text()) for p in (GKE / "alert-policies").glob("*.json")}
    # committed files = what the generator makes now (run it after changing alerts.yml)
    assert files == module.policies(), (
        "stale: python deploy/kubernetes/overlays/gke/alert_policies.py"
    )
    assert module.main(["--check"]) == 0
    schema = json.loads((SCHEMAS / "alertpolicy.json").read_text())
    by_alert = {policy["displayName"]: policy for policy in files.values()}
    assert by_alert.keys() == rules.keys()
    for name, policy in by_alert.items():
        jsonschema.validate(policy, schema)
        (condition,) = policy["conditions"]
        promql = condition["conditionPrometheusQueryLanguage"]
        rule = rules[name]
        assert promql["query"] == rule["expr"].strip() and promql["alertRule"] == name
        assert promql["duration"] == f"{module.seconds(rule.get('for', '0s'))}s"
        assert promql["labels"] == rule["labels"]
        assert "{{" not in policy["documentation"]["content"]
    assert module.seconds("1h30m") == 5400 and module.seconds("2m") == 120
    with pytest.raises(ValueError):
        module.seconds("2 minutes")


def test_a_changed_rule_makes_the_check_fail(tmp_path: Path) -> None:
    module = generator()
    rules = yaml.safe_load(ALERTS.read_text())
    rules["groups"][0]["rules"][0]["expr"] = "up == 0"
    changed = tmp_path / "alerts.yml"
    changed.write_text(yaml.safe_dump(rules))
    files = {p.name: json.loads(p.read_text()) for p in (GKE / "alert-policies").glob("*.json")}
    assert module.policies(changed) != files
