"""The code's shape is a contract: the layering (import-linter, contracts in pyproject.toml) and the size limits
(no module over 450 lines, no function over 80, in hpo/, ensembles/ and search_spaces/)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hpo", "ensembles", "search_spaces")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_import_contracts_hold() -> None:
    """lint-imports: the layers of hpo, and hpo / ensembles / search_spaces / experiments without cycles."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is not installed: pip install -e '.[test]'"
    out = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_modules_and_functions_stay_small() -> None:
    over: list[str] = []
    for path in _sources():
        src = path.read_text()
        rel = path.relative_to(ROOT)
        if len(src.splitlines()) > MAX_MODULE_LINES:
            over.append(f"{rel}: {len(src.splitlines())} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([d.lineno for d in node.decorator_list] + [node.lineno])
                length = (node.end_lineno or node.lineno) - start + 1
                if length > MAX_FUNCTION_LINES:
                    over.append(f"{rel}:{node.lineno} {node.name}: {length} lines (at most {MAX_FUNCTION_LINES})")
    assert not over, "split these:\n" + "\n".join(over)


@pytest.mark.parametrize("package", PACKAGES)
def test_sources_found(package: str) -> None:
    """The checks above read real files (an empty glob would make them pass vacuously)."""
    assert len([p for p in _sources() if p.relative_to(ROOT).parts[0] == package]) >= 3
