"""One address for the project: every link to it agrees with ``crate_edu.REPOSITORY``.

The README's clone command, the notebooks' Colab badges and install cells
(tests/notebooks/test_colab.py checks the cells word for word) and pyproject.toml's project URL all
name the repository; moving it means
changing ``crate_edu.REPOSITORY`` and whatever this test then reports.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import nbformat
import pytest

import crate_edu

ROOT = Path(__file__).resolve().parents[2]
SLUG = crate_edu.REPOSITORY.removeprefix("https://github.com/")
OWNER, NAME = SLUG.split("/")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: A link to a GitHub repository (or to Colab / raw files of one): group 1 is "owner/name".
GITHUB = re.compile(
    r"(?:github\.com|githubusercontent\.com|colab\.research\.google\.com/github)/([\w.-]+/[\w.-]+)"
)


def test_repository_is_a_github_address():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", crate_edu.REPOSITORY)


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    files = []
    for name in filter(None, names.stdout.split("\0")):
        path = ROOT / name
        if path.is_file() and path.suffix in {".py", ".md", ".toml", ".ipynb", ".yml", ".txt", ".cfg", ""}:
            files.append(path)
    return files


def test_every_link_to_the_project_names_the_same_repository():
    wrong = []
    for path in _tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in GITHUB.finditer(text):
            slug = match.group(1).removesuffix(".git")
            owner, name = slug.split("/")
            if (owner == OWNER or name == NAME) and slug != SLUG:
                wrong.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert not wrong, f"links that do not point at {crate_edu.REPOSITORY}:\n" + "\n".join(wrong)


def test_the_link_check_sees_a_stale_address():
    stale = f"https://colab.research.google.com/github/{OWNER}/old_name/blob/main/x.ipynb"
    slugs = [m.group(1) for m in GITHUB.finditer(stale)]
    assert slugs == [f"{OWNER}/old_name"] and slugs[0] != SLUG


def test_pyproject_names_the_repository():
    homepage = re.search(r'^Homepage\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert homepage and homepage.group(1) == crate_edu.REPOSITORY


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_colab_badge_opens_this_notebook_from_the_repository(path):
    text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    badge = f"https://colab.research.google.com/github/{SLUG}/blob/main/notebooks/{path.name}"
    assert f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({badge})" in text


def test_readme_links_the_notebooks_and_clones_the_repository():
    readme = (ROOT / "README.md").read_text()
    assert f"git clone {crate_edu.REPOSITORY}\n" in readme
    for path in NOTEBOOKS:
        assert f"(notebooks/{path.name})" in readme, f"the README's notebook index lacks {path.name}"
