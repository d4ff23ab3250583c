"""Migrations match the models; the library catalog lists what engines ship."""

from __future__ import annotations

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
    everything = requests.get(platform.url("/codelib")).json()
    python = requests.get(platform.url("/codelib"), params={"language": "python"}).json()
    names = {lib["name"] for lib in python}
    assert {"requests", "httpx", "pydantic", "python-dateutil", "pytz"} <= names
    assert {lib["language"] for lib in python} == {"python"}
    assert len(everything) >= len(python)
    bad = requests.get(platform.url("/codelib"), params={"language": "cobol"})
    assert bad.status_code == 400 and "language" in bad.json()["message"]
