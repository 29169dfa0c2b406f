"""The wheel: built from this tree, installed into a fresh virtual environment, it runs.

Offline and quick (about 15 s): the wheel is built with the setuptools already
installed (``pip wheel --no-build-isolation --no-index``, from a copy of the tree so
no ``build/`` appears in the checkout), installed with ``--no-deps --no-index`` into
a venv made without pip, whose dependencies are this venv's site-packages, named in
a ``.pth`` file (a plain path: the editable install of this checkout that lives there
is not picked up, so ``index_builder`` is the wheel's). Nothing is downloaded.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "index_builder"
pytestmark = pytest.mark.slow


def _run(args: list[str | Path], cwd: Path, timeout: float = 120) -> str:
    """Run ``args`` with no inherited PYTHONPATH or settings; its output (it must succeed)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INDEX_BUILDER_", "PYTHON", "PIP_", "VIRTUAL_ENV"))
    }
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this tree (built offline with the installed setuptools)."""
    setuptools = importlib.metadata.version("setuptools")
    assert int(setuptools.split(".")[0]) >= 77, (
        f"setuptools {setuptools} cannot build the wheel (PEP 639 license); "
        "make (pip install -e '.[dev]') installs setuptools>=77"
    )
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, tree / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "src", tree / "src", ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run(
        [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, tree],
        cwd=tree,
    )
    (built,) = dist.glob("index_builder-*.whl")
    return built


def test_the_wheel_holds_the_package_data_and_the_license(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        license_text = archive.read(f"{info}/licenses/LICENSE")
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert all(n.startswith(("index_builder/", f"{info}/")) for n in names), names
    shipped = {
        f"index_builder/{p.relative_to(PACKAGE).as_posix()}"
        for pattern in (
            "storage/duckdb/queries/*.sql",
            "engine/builtin_indices.yaml",
            "py.typed",
            "api/static/*.html",
            "api/static/*.css",
            "api/static/*.svg",
            "api/static/js/*.js",
        )
        for p in PACKAGE.glob(pattern)
    }
    assert len(shipped) > 10 and "index_builder/api/static/index.html" in shipped
    assert not shipped - names, f"package data missing from the wheel: {shipped - names}"
    assert "index_builder/api/docs.py" in names
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert license_text == (REPO / "LICENSE").read_bytes()
    assert b"Apache License" in license_text and b"Version 2.0, January 2004" in license_text
    assert metadata["Requires-Python"] == ">=3.11"  # no upper cap
    assert any(r.startswith("fastapi-offline") for r in metadata.get_all("Requires-Dist"))
    assert "index-builder = index_builder.cli.main:app" in entry_points


def test_the_wheel_installs_into_a_fresh_venv_and_builds_an_index(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run(
        [*pip, "--python", python, "install", "-q", "--no-deps", "--no-index", wheel], cwd=tmp_path
    )
    # the dependencies: this venv's site-packages, after the new one's (written after the
    # install, so that pip never saw this checkout's editable install there)
    site = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
        ).strip()
    )
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "index-builder-deps.pth").write_text("\n".join(deps) + "\n")

    where = _run(
        [
            python,
            "-c",
            "import index_builder, importlib.metadata as m; "
            "from index_builder.api.dashboard import dashboard_assets; "
            "from index_builder.api.docs import docs_assets; "
            "print(index_builder.__file__, m.version('index-builder'), "
            "len(dashboard_assets().assets), len(docs_assets('t', '/openapi.json').assets))",
        ],
        cwd=tmp_path,
    ).split()
    assert Path(where[0]).is_relative_to(site), where  # the wheel's code, not this checkout's
    assert where[1] == importlib.metadata.version("index-builder")
    assert int(where[2]) > 5 and int(where[3]) == 4  # the dashboard's and the docs' files

    cli = venv / "bin" / "index-builder"
    assert _run([cli, "--version"], cwd=tmp_path).split()[-1] == where[1]
    assert "quickstart" in _run([cli, "--help"], cwd=tmp_path)
    database = tmp_path / "wheel.duckdb"
    out = _run(
        [cli, "--db", database, "-q", "quickstart", "--symbols", "120", "--days", "30"],
        cwd=tmp_path,
    )
    assert "ew100" in out and database.is_file()
    performance = _run(
        [cli, "--db", database, "performance", "--index", "ew100", "--format", "csv"],
        cwd=tmp_path,
    )
    assert performance.startswith("date,level,daily_return,cumulative_return")
    assert len(performance.strip().splitlines()) == 31  # the header and 30 sessions
