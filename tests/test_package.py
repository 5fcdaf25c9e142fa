"""The package's layers: the shipped pack imports nothing from the lab, the core nothing from a host."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("__init__.py", "_version.py", "plot.py", "install.py", "samplers", "lambdas", "nodes", "webui", "scripts")
CORE = ("samplers", "lambdas")
HOST_MODULES = ("comfy", "comfy_extras", "folder_paths", "server", "execution", "modules", "gradio", "nodes", "webui",
                "scripts", "k_diffusion")


def python_files(*names):
    for name in names:
        path = ROOT / name
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def imported(path):
    """Every module ``path`` imports, relative imports resolved against its package (``dode`` = the repo root)."""
    package = ["dode", *path.relative_to(ROOT).parent.parts]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            yield ".".join(base + ([node.module] if node.module else []))


def test_imported_resolves_relative_imports():
    assert list(imported(ROOT / "lab" / "bench.py")).count("dode.lab.protocol") == 1
    assert "dode.lambdas" in imported(ROOT / "lab" / "bench.py")


@pytest.mark.parametrize("path", list(python_files(*SHIPPED)), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_code_never_imports_the_lab(path):
    assert not [m for m in imported(path) if m == "dode.lab" or m.startswith("dode.lab.")]


@pytest.mark.parametrize("path", list(python_files(*CORE)), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_host(path):
    hosts = [m for m in imported(path) if m.split(".")[0] in HOST_MODULES
             or m.startswith(("dode.nodes", "dode.webui", "dode.scripts"))]
    assert not hosts
