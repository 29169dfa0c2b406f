"""Fixtures of the deployment tests: rendered manifests, the compose file, the routes."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from index_builder.api.app import create_app
from index_builder.settings import Settings

from deploy_files import KUSTOMIZATIONS, ROOT, kustomize


@pytest.fixture(scope="session")
def manifests() -> dict[str, list[dict[str, Any]]]:
    """Every kustomization's rendered resources, by name (base, gke)."""
    return {name: kustomize(folder) for name, folder in KUSTOMIZATIONS.items()}


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker-compose.yml, as YAML (anchors and merge keys resolved)."""
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


@pytest.fixture(scope="session")
def routes(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every path the app serves (its own routes and the OpenAPI schema's)."""
    folder = tmp_path_factory.mktemp("routes")
    app = create_app(Settings(_env_file=None, database=folder / "db.duckdb"))  # type: ignore[call-arg]
    paths = {route.path for route in app.routes if isinstance(getattr(route, "path", None), str)}
    return paths | set(app.openapi()["paths"])
