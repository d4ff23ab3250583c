"""Migrations match the models; the library catalog lists what engines ship."""

from __future__ import annotations

import re
import subprocess
import sys

import requests

from tests.conftest import REPO_ROOT


def test_models_and_migrations_agree(platform):
    """`alembic check`: a model change without a migration fails here."""
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={platform.settings().sqlalchemy_url}",
         "check"],
        cwd=REPO_ROOT, capture_output=True, text=True, env=platform.env,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_codelib_lists_python_libraries(platform):
    """The Python catalog is what the image has (its build-time manifest, synced by the
    worker at start): every pin of requirements.txt with its version and what to import."""
    everything = requests.get(platform.url("/codelib")).json()
    python = requests.get(platform.url("/codelib"), params={"language": "python"}).json()
    assert {lib["language"] for lib in python} == {"python"}
    listed = {_normalised(lib["name"]): lib for lib in python}
    assert {name: lib["version"] for name, lib in listed.items()} == _pins()
    assert listed["beautifulsoup4"]["modules"] == ["bs4"]
    assert listed["pandas"]["modules"] == ["pandas"]
    assert listed["python-dateutil"]["modules"] == ["dateutil"]
    assert len(everything) >= len(python)
    javascript = requests.get(platform.url("/codelib"), params={"language": "javascript"}).json()
    assert {"fetch", "crypto"} <= {lib["name"] for lib in javascript}
    assert {lib["version"] for lib in javascript} == {None}  # listed by hand: built in
    bad = requests.get(platform.url("/codelib"), params={"language": "cobol"})
    assert bad.status_code == 400 and "language" in bad.json()["message"]


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "engines" / "python" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_normalised(name)] = version
    return pins
