"""Notebook conventions: paired with their py:percent source, executed, and complete.

nbval (``pytest --nbval``, configured in pyproject.toml) re-runs every notebook and compares
outputs; this file checks what nbval does not: the .py/.ipynb pair is in sync, the committed
notebook carries outputs, it has the parts every notebook promises, its "Run time" table gives the
times measured by ``benchmarks/notebooks.py`` (quick and full mode, with the date), and a notebook
whose full mode is long says so right before its first long cell.
"""

import json
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
RESULTS = ROOT / "benchmarks" / "results"
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


#: A notebook whose full mode takes longer than this on the measuring CPU must warn before its
#: first long cell ("about 2 minutes").
LONG_FULL_MODE_S = 120.0
#: A cell at least this long (in full mode) counts as a long cell.
LONG_CELL_S = 20.0


def _measured(mode: str) -> dict[str, dict]:
    data = json.loads((RESULTS / f"notebooks_{mode}.json").read_text())
    return {row["notebook"]: row for row in data["results"]}


def format_seconds(seconds: float) -> str:
    """How the Run time tables write a measured time: "12 s" below 90 s, else "2.8 min"."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _run_time_cell(nb) -> str:
    return next(c.source for c in nb.cells if c.cell_type == "markdown" and "## Run time" in c.source)


@pytest.mark.parametrize("ipynb", IPYNBS, ids=[p.stem for p in IPYNBS])
def test_run_time_table_gives_the_measured_times(ipynb):
    text = _run_time_cell(nbformat.read(ipynb, as_version=4))
    for mode in ("quick", "full"):
        row = _measured(mode).get(ipynb.name)
        assert row, (
            f"{ipynb.name}: no {mode}-mode row in benchmarks/results/notebooks_{mode}.json; run "
            f"`python benchmarks/notebooks.py {'--full ' * (mode == 'full')}{ipynb.name[:2]}`"
        )
        for key in ("seconds", "kernel_cpu_seconds"):
            assert format_seconds(row[key]) in text, (
                f"{ipynb.name}: the Run time table lacks the measured {mode}-mode {key} "
                f"({format_seconds(row[key])}, benchmarks/results/notebooks_{mode}.json)"
            )
        assert row["date"] in text, f"{ipynb.name}: the Run time table does not give the date {row['date']}"
    assert "| GPU |" in text, f"{ipynb.name}: the Run time table has no GPU row"


@pytest.mark.parametrize("ipynb", IPYNBS, ids=[p.stem for p in IPYNBS])
def test_long_full_mode_is_announced_before_its_first_long_cell(ipynb):
    row = _measured("full")[ipynb.name]
    if row["seconds"] <= LONG_FULL_MODE_S:
        return
    nb = nbformat.read(ipynb, as_version=4)
    long_lines = {c["first_line"] for c in row["longest_cells"] if c["seconds"] >= LONG_CELL_S}
    assert long_lines, f"{ipynb.name}: full mode is long but no single cell is; record longest_cells again"

    def first_code_line(cell) -> str:
        lines = [x for x in cell.source.splitlines() if x.strip() and not x.lstrip().startswith("#")]
        return (lines or [""])[0][:80]

    first = next(
        (i for i, c in enumerate(nb.cells) if c.cell_type == "code" and first_code_line(c) in long_lines),
        None,
    )
    assert first is not None, f"{ipynb.name}: none of the long cells {long_lines} is in the notebook"
    note = nb.cells[first - 1]
    assert note.cell_type == "markdown" and "CRATE_EDU_QUICK" in note.source and "full mode" in note.source, (
        f"{ipynb.name}: the cell before its first long cell ({first_code_line(nb.cells[first])!r}) must be a "
        "Markdown note saying how long it takes in full mode and how to switch to quick mode"
    )
