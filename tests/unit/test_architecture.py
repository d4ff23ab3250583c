"""The rooms' rules that import-linter cannot see: engines are not packages of ours, and know
nothing of the platform (they run inside the sandbox, with only their own files)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ENGINES = Path(__file__).resolve().parents[2] / "engines"
PLATFORM_PACKAGES = {"api", "worker", "shared", "codeactions"}


def test_python_engine_imports_nothing_of_the_platform():
    for path in (ENGINES / "python").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in PLATFORM_PACKAGES, f"{path}: imports {name}"


def test_javascript_engine_requires_only_its_own_files_and_node():
    requires = re.compile(r"""require\(\s*["']([^"']+)["']\s*\)""")
    for path in (ENGINES / "javascript").rglob("*.js"):
        for target in requires.findall(path.read_text()):
            if target.startswith("."):
                resolved = (path.parent / target).resolve()
                assert resolved.is_relative_to(ENGINES / "javascript"), f"{path}: {target}"
            else:
                assert "/" not in target or target.startswith("node:"), f"{path}: {target}"


def test_go_engine_imports_only_the_standard_library_and_itself():
    module = (ENGINES / "go" / "codeactions" / "go.mod").read_text().split()[1]
    blocks = re.compile(r"^import\s*\((.*?)^\)", re.M | re.S)
    single = re.compile(r'^import\s+(?:[\w.]+\s+)?"([^"]+)"', re.M)
    quoted = re.compile(r'"([^"]+)"')
    for path in (ENGINES / "go").rglob("*.go"):
        text = path.read_text()
        targets = single.findall(text)
        for block in blocks.findall(text):
            targets += quoted.findall(block)
        assert targets or "package" in text
        for target in targets:
            first = target.split("/")[0]
            assert "." not in first or target.startswith(module), f"{path}: imports {target}"
