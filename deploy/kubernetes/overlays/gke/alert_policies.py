"""Cloud Monitoring alert policies from the Prometheus alert rules, one to one.

Managed Service for Prometheus keeps the series Prometheus would scrape (PodMonitoring
``index-builder``: ``job="index-builder"``), and a Cloud Monitoring alert policy
evaluates PromQL (``conditionPrometheusQueryLanguage``). Each rule of
``deploy/prometheus/alerts.yml`` becomes one policy in ``alert-policies/<alert>.json``:
the same expression, its ``for`` as the condition's duration, its labels (severity),
its annotations as the documentation, which links the rule's runbook entry.

    python deploy/kubernetes/overlays/gke/alert_policies.py          # write the files
    python deploy/kubernetes/overlays/gke/alert_policies.py --check  # exit 1 if stale
    for f in deploy/kubernetes/overlays/gke/alert-policies/*.json; do
      gcloud monitoring policies create --policy-from-file="$f"
    done
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parents[2] / "prometheus" / "alerts.yml"
OUTPUT = HERE / "alert-policies"
RUNBOOK = 'docs/operations.md, section "Alert runbook"'
SEVERITY = {"page": "CRITICAL", "ticket": "WARNING"}
EVALUATION_INTERVAL = "60s"
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_LABEL = re.compile(r"\{\{\s*\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
_VALUE = re.compile(r"\{\{\s*\$value[^}]*\}\}")


def seconds(duration: str) -> int:
    """A Prometheus duration of hours, minutes and seconds (``2m``, ``1h30m``) in seconds."""
    match = _DURATION.fullmatch(duration)
    if not duration or match is None:
        raise ValueError(f"unsupported duration {duration!r}")
    hours, minutes, secs = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + secs


def documentation_text(text: str) -> str:
    """Prometheus annotation templating as Cloud Monitoring's: ``{{ $labels.x }}`` is
    ``${metric.label.x}``; ``{{ $value }}`` (any format) is "the value"."""
    return _VALUE.sub("the value", _LABEL.sub(r"${metric.label.\1}", text))


def policy(group: str, rule: dict[str, Any]) -> dict[str, Any]:
    """The alert policy of one alerting rule."""
    labels = {str(k): str(v) for k, v in rule.get("labels", {}).items()}
    annotations = rule.get("annotations", {})
    summary = documentation_text(annotations.get("summary", rule["alert"]))
    description = documentation_text(annotations.get("description", ""))
    content = f"{summary}\n\n{description}\n\nRunbook: {RUNBOOK}, entry {rule['alert']}."
    result: dict[str, Any] = {
        "displayName": rule["alert"],
        "documentation": {"content": content, "mimeType": "text/markdown"},
        "userLabels": {"team": "index-builder", **labels},
        "combiner": "OR",
        "conditions": [
            {
                "displayName": rule["alert"],
                "conditionPrometheusQueryLanguage": {
                    "query": str(rule["expr"]).strip(),
                    "duration": f"{seconds(str(rule.get('for', '0s')))}s",
                    "evaluationInterval": EVALUATION_INTERVAL,
                    "labels": labels,
                    "ruleGroup": group,
                    "alertRule": rule["alert"],
                },
            }
        ],
        "alertStrategy": {"autoClose": "604800s"},
        "enabled": True,
    }
    if labels.get("severity") in SEVERITY:
        result["severity"] = SEVERITY[labels["severity"]]
    return result


def policies(rules: Path = RULES) -> dict[str, dict[str, Any]]:
    """Every alerting rule's policy, by file name."""
    groups = yaml.safe_load(rules.read_text())["groups"]
    return {
        f"{rule['alert']}.json": policy(group["name"], rule)
        for group in groups
        for rule in group["rules"]
        if "alert" in rule
    }


def rendered(value: dict[str, Any]) -> str:
    """A policy file's text."""
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    """Write the files, or with ``--check`` say which are missing, stale or extra."""
    wanted = {name: rendered(value) for name, value in policies().items()}
    present = {p.name: p.read_text() for p in OUTPUT.glob("*.json")}
    if "--check" in argv:
        problems = sorted(
            [f"stale or missing: {n}" for n, t in wanted.items() if present.get(n) != t]
            + [f"no rule for: {n}" for n in present if n not in wanted]
        )
        print("\n".join(problems) or f"{len(wanted)} alert policies match {RULES.name}")
        return 1 if problems else 0
    OUTPUT.mkdir(exist_ok=True)
    for name in present.keys() - wanted.keys():
        (OUTPUT / name).unlink()
    for name, text in wanted.items():
        (OUTPUT / name).write_text(text)
    print(f"wrote {len(wanted)} alert policies to {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
