"""Import directions, one way only: cli -> simsearch -> indexes, and benchmarks -> the library, never the reverse.
Checked twice: in the source (every import statement, wherever it sits) and in a fresh interpreter (what importing a
package or running the query path really loads). torch loads lazily, and matplotlib only where a picture is drawn."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: What each shipped package must never import, directly or through another module.
FORBIDDEN = {
    "indexes": {"torch", "timm", "simsearch", "cli", "benchmarks", "matplotlib"},
    "simsearch": {"cli", "benchmarks", "matplotlib"},
    "cli": {"benchmarks", "matplotlib"},
}


def _run(code: str) -> None:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def _imports(package: str, *, module_level_only: bool = False) -> set[tuple[str, str]]:
    """(file, top-level module) for every import statement under ``package`` (only those run when the module is
    imported, with ``module_level_only``)."""
    found = set()
    for path in (REPO / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        nodes = tree.body if module_level_only else list(ast.walk(tree))
        for node in nodes:
            if isinstance(node, ast.Import):
                found |= {(path.name, alias.name.split(".")[0]) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((path.name, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_a_package_loads_nothing_it_must_not(package: str) -> None:
    """In a fresh interpreter: `import indexes` loads neither torch nor simsearch, `import simsearch` neither the CLI
    nor the benchmarks nor matplotlib (nor torch: `info`, `remove` and vector search must not pay for it), and the
    whole CLI with every command registered does not load the benchmarks."""
    extra = {"simsearch": {"torch", "timm"}}.get(package, set())
    bad = sorted(FORBIDDEN[package] | extra)
    module = "cli.main" if package == "cli" else package
    _run(f"import sys, {module}; bad = {{m.split('.')[0] for m in sys.modules}} & set({bad!r}); assert not bad, bad")


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_of_a_package_imports_what_it_must_not(package: str) -> None:
    """In the source, lazy imports included (the commands import the library inside their functions), with one
    exception: the drawing functions import matplotlib inside themselves, never at module level."""
    lazy_ok = {"matplotlib"} if package == "simsearch" else set()
    offenders = sorted((f, m) for f, m in _imports(package) if m in FORBIDDEN[package] - lazy_ok)
    offenders += sorted((f, m) for f, m in _imports(package, module_level_only=True) if m in lazy_ok)
    assert not offenders


def test_the_index_layer_imports_only_numpy_faiss_and_the_standard_library() -> None:
    allowed = {"numpy", "faiss", "indexes", "__future__"} | set(sys.stdlib_module_names)
    offenders = sorted((f, mod) for f, mod in _imports("indexes") if mod not in allowed)
    assert not offenders


def test_an_image_query_through_the_library_and_the_cli_never_loads_matplotlib_or_the_benchmarks(
    sample_collection: Path,
) -> None:
    photo = REPO / "samples" / "queries" / "sunflower_0042.jpg"
    _run(
        f"""
import sys
import simsearch
from click.testing import CliRunner
from cli.main import main

with simsearch.open_collection({str(sample_collection)!r}) as col:
    hits = col.search({str(photo)!r}, k=3)
    assert [h.path.split("/")[-2] for h in hits] == ["sunflower"] * 3, hits
result = CliRunner().invoke(main, ["query", {str(photo)!r}, "-c", {str(sample_collection)!r}, "-k", "3", "--json"])
assert result.exit_code == 0, result.output
assert "torch" in sys.modules  # the query did run the model
bad = {{m.split(".")[0] for m in sys.modules}} & {{"matplotlib", "benchmarks"}}
assert not bad, bad
"""
    )


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
