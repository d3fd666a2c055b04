"""The package's structure, as docs/design.md describes it, checked from the source.

- no import cycles between crate_edu's modules (every import counts, also those inside functions);
- no private name (leading underscore) imported from another module;
- every subpackage says what it exports (``__all__``) and ``crate_edu/__init__.py`` imports its
  public API explicitly (no lazy ``__getattr__``);
- notebooks and benchmarks import only public names, from the package or a subpackage's face;
- one name per level: the official arithmetic is "reference" (the flag once called ``literal``);
- no pointer to a design document outside the repository, and docs/design.md names every folder.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import crate_edu
from tests.support.paths import ROOT

PACKAGE = ROOT / "crate_edu"
#: The modules a notebook or a benchmark may import from: the package, its subpackages' faces and
#: the single-module levels.
FACES = {
    "crate_edu",
    "crate_edu.coding_rate",
    "crate_edu.data",
    "crate_edu.denoising",
    "crate_edu.device",
    "crate_edu.evaluation",
    "crate_edu.experiments",
    "crate_edu.models",
    "crate_edu.notebook",
    "crate_edu.plotting",
    "crate_edu.text",
    "crate_edu.train",
    "crate_edu.weights",
}
#: The one module that may say "literal": it turns the old names into one-line messages.
RENAMES = PACKAGE / "renamed.py"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, package: str) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found += [(base, alias.name, node.lineno) for alias in node.names]
    return found


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    graph: dict[str, set[str]] = {name: set() for name in sources}
    for name, path in sources.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for module, imported, _ in _imports(path, package):
            for target in (f"{module}.{imported}" if imported else None, module):
                if target in sources and target != name:
                    graph[name].add(target)
                    break
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a package's own ``__init__`` importing its modules is not one)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if node.startswith(nxt + "."):  # a module importing its own package's face
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_private_names_cross_modules():
    offenders = []
    for name, path in _sources().items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for module, imported, line in _imports(path, package):
            if not module.startswith("crate_edu"):
                continue
            private = [part for part in [*module.split("."), imported or ""] if part.startswith("_")]
            if any(p not in ("__init__", "__version__", "__main__") for p in private):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}.{imported}")
    assert not offenders, "\n".join(offenders)


def test_every_subpackage_declares_its_exports():
    for init in sorted(PACKAGE.rglob("__init__.py")):
        module = importlib.import_module(_module_name(init))
        assert hasattr(module, "__all__"), f"{init.relative_to(ROOT)} has no __all__"
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing, f"{init.relative_to(ROOT)}: __all__ names {missing}, which it does not define"


def test_package_root_imports_its_api_explicitly():
    source = (PACKAGE / "__init__.py").read_text(encoding="utf-8")
    assert "def __getattr__" not in source, "crate_edu/__init__.py must import its public API explicitly"
    for name in crate_edu.__all__:
        assert name in vars(crate_edu), f"crate_edu.__all__ names {name!r}, which is not imported"


SCRIPTS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebooks_and_benchmarks_use_the_public_api(path: Path):
    offenders = []
    for module, imported, line in _imports(path, package=""):  # scripts import absolutely
        if not module.startswith("crate_edu"):
            continue
        where = f"{path.name}:{line}"
        if imported is None:  # import crate_edu... as ...
            if module not in FACES:
                offenders.append(f"{where}: import {module} (not a public module: use {sorted(FACES)})")
            continue
        if f"{module}.{imported}" in FACES:  # from crate_edu import coding_rate
            continue
        if module not in FACES:
            offenders.append(f"{where}: from {module} import {imported} (import it from the package's face)")
        elif imported not in importlib.import_module(module).__all__:
            offenders.append(f"{where}: {module}.{imported} is not in {module}.__all__")
    assert not offenders, "\n".join(offenders)


def _text_files(*folders: str) -> list[Path]:
    return [p for f in folders for p in sorted((ROOT / f).rglob("*")) if p.suffix in {".py", ".md", ".ipynb"}]


def test_one_name_for_the_official_arithmetic():
    offenders = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in _text_files("crate_edu", "notebooks", "benchmarks", "docs")
        if p != RENAMES
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bliteral\b", line)
    ]
    assert not offenders, "say 'reference' (the official arithmetic), not 'literal':\n" + "\n".join(offenders)


def test_no_design_document_outside_the_repository():
    offenders = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in _text_files("crate_edu", "notebooks", "benchmarks", "tests")
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if "DESIGN.md" in line and p != Path(__file__)
    ]
    assert not offenders, "point to docs/design.md instead:\n" + "\n".join(offenders)


def test_design_document_names_every_folder_and_module():
    """Each folder has a row in docs/design.md's table that names each of its modules."""
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    rows = {line.split("`")[1]: line for line in design.splitlines() if line.startswith("| `crate_edu/")}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.name in ("__init__.py", "__main__.py"):
            continue
        if len(rel.parts) == 1:
            assert f"crate_edu/{rel}" in rows, f"docs/design.md has no row for crate_edu/{rel}"
        else:
            row = rows.get(f"crate_edu/{rel.parent}/", "")
            assert f"`{rel.name}`" in row, (
                f"docs/design.md's row for crate_edu/{rel.parent}/ does not name {rel.name}"
            )
