"""Contracts of the code's shape: the Streamlit server never imports TensorFlow or Keras (training and
prediction run in child processes), no module imports another's private names, and no import cycle
makes a module depend on the order others were imported in."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from cxr_core.config import PROJECT_ROOT

HEAVY = ("tensorflow", "keras")


def server_files(root: Path = PROJECT_ROOT) -> list[Path]:
    """What the server process runs: the entry script, every page and the ui package."""
    return [root / "app.py", *sorted((root / "pages").glob("*.py")), *sorted((root / "ui").glob("*.py"))]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function (a page's lazy import runs too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def heavy_after_importing(modules: set[str]) -> list[str]:
    """Import the modules in a fresh interpreter; the heavy ones that came along."""
    code = (f"import importlib, sys\nfor name in {sorted(modules)!r}:\n    importlib.import_module(name)\n"
            f"print(' '.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def _importable(name: str) -> bool:
    # `from pkg import function` lists pkg.function, which is no module: keep module names only.
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def server_modules(files: list[Path]) -> set[str]:
    return {name for path in files for name in imported_modules(path) if _importable(name)}


def test_the_server_never_imports_tensorflow_or_keras():
    modules = server_modules(server_files())
    assert "cxr_core.run_tables" in modules and "ui.home" in modules  # the walk found the pages' imports
    assert heavy_after_importing(modules) == []


def test_the_check_fails_when_a_page_imports_the_model_code(tmp_path):
    page = tmp_path / "page.py"
    page.write_text("import streamlit as st\n\n\ndef show():\n    from cxr_core import models\n")
    assert "cxr_core.models" in server_modules([page])
    assert set(heavy_after_importing(server_modules([page]))) & set(HEAVY)


def _python_files() -> list[Path]:
    folders = ("cxr_core", "ui", "pages", "benchmarks", "tests")
    return [PROJECT_ROOT / "app.py", *(p for f in folders for p in sorted((PROJECT_ROOT / f).rglob("*.py")))]


def private_imports(path: Path) -> list[str]:
    """`from x import _name` and `import x._y` lines: another module's private names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            found += [f"from {'.' * node.level}{node.module or ''} import {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names
                      if any(part.startswith("_") and not part.startswith("__") for part in a.name.split("."))]
    return found


def test_no_module_imports_another_modules_private_names():
    # Tests may reach into the module they test; the product and the benchmarks may not.
    offenders = {str(p.relative_to(PROJECT_ROOT)): private_imports(p) for p in _python_files()
                 if "tests" not in p.parts}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_private_import_check_sees_both_forms(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from .images import _stretch, decode_image\nimport os._hidden\nfrom . import __version__\n")
    assert private_imports(sample) == ["from .images import _stretch", "import os._hidden"]


@pytest.mark.parametrize("module", ["cxr_core.dicom", "cxr_core.calibration", "cxr_core.pixels"])
def test_a_module_imports_first_on_its_own(module):
    # With a cycle, importing one side first fails or sees a half-made module.
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
