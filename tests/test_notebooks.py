"""Notebook conventions: paired with their py:percent source, executed, and complete.

nbval (``pytest --nbval``, configured in pyproject.toml) re-runs every notebook and compares
outputs; this file checks what nbval does not: the .py/.ipynb pair is in sync, the committed
notebook carries outputs, and it has the parts every notebook promises.
"""

from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
IPYNBS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
PYS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))

REQUIRED_TEXT = {
    "a Colab badge": "colab.research.google.com/github/",
    "the Colab bootstrap": '"google.colab" in sys.modules',
    "learning goals": "## What you will learn",
    "expected run times": "## Run time",
    "a summary": "## Summary",
    "exercises": "## Exercises",
}


def test_every_notebook_has_its_pair():
    assert {p.stem for p in IPYNBS} == {p.stem for p in PYS}, "run `jupytext --sync notebooks/NAME.py`"


@pytest.mark.parametrize("ipynb", IPYNBS, ids=[p.stem for p in IPYNBS])
def test_pair_in_sync_executed_and_complete(ipynb):
    nb = nbformat.read(ipynb, as_version=4)
    paired = jupytext.read(ipynb.with_suffix(".py"))
    assert [c.source.strip() for c in nb.cells] == [c.source.strip() for c in paired.cells], (
        f"{ipynb.name} and its .py differ: run `jupytext --sync {ipynb.with_suffix('.py')}`"
    )
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), f"{ipynb.name} has unexecuted cells"
    text = "\n".join(c.source for c in nb.cells)
    for what, needle in REQUIRED_TEXT.items():
        assert needle in text, f"{ipynb.name} lacks {what} ({needle!r})"
    assert f"notebooks/{ipynb.name}" in text, f"{ipynb.name}: the Colab badge must point at this notebook"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{ipynb.name} was committed with an error output"
