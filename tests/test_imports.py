"""Import directions: indexes knows nothing above it, the library never imports the CLI, and torch loads lazily."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(code: str) -> None:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def _imported_modules(package: str) -> set[tuple[str, str]]:
    """(file, top-level module) for every import statement under ``package``."""
    found = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found |= {(path.name, alias.name.split(".")[0]) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((path.name, node.module.split(".")[0]))
    return found


def test_importing_indexes_loads_neither_torch_nor_simsearch() -> None:
    _run("import sys, indexes; bad = {'torch', 'simsearch', 'timm'} & set(sys.modules); assert not bad, bad")


def test_importing_simsearch_does_not_load_the_cli_or_torch() -> None:
    # `simsearch info`, `remove` and vector search must not pay for torch's import
    _run("import sys, simsearch; bad = {'cli', 'torch', 'timm'} & set(sys.modules); assert not bad, bad")


@pytest.mark.parametrize("package", ["simsearch", "indexes"])
def test_no_library_module_imports_the_cli(package: str) -> None:
    offenders = sorted(f for f, mod in _imported_modules(package) if mod == "cli")
    assert not offenders


def test_the_index_layer_imports_only_numpy_faiss_and_the_standard_library() -> None:
    allowed = {"numpy", "faiss", "indexes", "__future__"} | set(sys.stdlib_module_names)
    offenders = sorted((f, mod) for f, mod in _imported_modules("indexes") if mod not in allowed)
    assert not offenders


def test_info_vector_search_and_remove_on_a_real_collection_never_load_torch(
    sample_collection: Path, tmp_path: Path
) -> None:
    from conftest import copy_collection

    path = str(copy_collection(sample_collection, tmp_path / "col"))
    _run(
        f"""
import sys
import simsearch
from click.testing import CliRunner
from cli.main import main

with simsearch.open_collection({path!r}) as col:
    assert col.info().images == 48
    hit = col.search_vectors(col.store.vectors([3], col.dim)[0], k=1)[0]
    assert hit.id == 3, hit
    assert [r.id for r in col.remove([3])] == [3]
result = CliRunner().invoke(main, ["info", "-c", {path!r}, "--json"])
assert result.exit_code == 0, result.output
bad = {{"torch", "timm"}} & set(sys.modules)
assert not bad, bad
"""
    )
