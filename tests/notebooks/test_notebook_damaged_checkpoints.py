"""Notebooks 07 and 08 carry on when a shipped checkpoint is damaged, as they do when it is missing.

Each notebook loads the small models that ship in ``crate_edu/resources/checkpoints/``;
the cache folder ``$CRATE_EDU_CACHE`` is looked in first, where a copy whose sha256 differs from
the pinned one raises ``WeightsFileError``. Here that folder holds copies of all three shipped
files with one byte flipped, and each notebook is executed top to bottom in quick mode (both at
once, one kernel each): no cell may raise, and each damaged file is reported in exactly one line
of output that says what was wrong and what the notebook does instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from crate_edu.weights import (
    TUTORIAL_CHECKPOINTS,
    WeightsFileError,
    shipped_checkpoint_dir,
    tutorial_checkpoint,
)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

#: notebook -> {checkpoint name: what its one line must also say (the fallback it takes)}
EXPECTED = {
    "07_emergent_segmentation.ipynb": {
        "cluttered-digits-crate": "using an UNTRAINED model instead",
        "cluttered-digits-vit": "using an UNTRAINED model instead",
    },
    "08_crate_mae.ipynb": {
        "cluttered-digits-crate-mae": "using the demo model",
        "cluttered-digits-crate": "no probe",
    },
}


@pytest.fixture(scope="module")
def damaged_folder():
    """Copies of every shipped checkpoint, each with one byte in the middle flipped."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for entry in TUTORIAL_CHECKPOINTS.values():
            copy = folder / entry.filename
            shutil.copyfile(shipped_checkpoint_dir() / entry.filename, copy)
            data = bytearray(copy.read_bytes())
            data[len(data) // 2] ^= 0x01
            copy.write_bytes(bytes(data))
        yield folder


def _execute(name: str, checkpoints: Path, sockets: Path):
    """Run notebook ``name`` in quick mode with ``$CRATE_EDU_CACHE`` set; the executed notebook."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "CRATE_EDU_CHECKPOINTS"}  # the older name wins
    env |= {"CRATE_EDU_QUICK": "1", "CRATE_EDU_CACHE": str(checkpoints)}
    km = KernelManager(kernel_name="python3", transport="ipc", ip=str(sockets / name))
    try:
        client = NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(NOTEBOOKS)}})
        client.execute(env=env)
    finally:  # a kernel manager passed in is ours to stop
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    return nb


@pytest.fixture(scope="module")
def executed(damaged_folder):
    """Both notebooks, executed at the same time (two kernels on two cores)."""
    with tempfile.TemporaryDirectory() as sockets, ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_execute, name, damaged_folder, Path(sockets)) for name in EXPECTED}
        return {name: future.result() for name, future in futures.items()}


def _output_lines(nb) -> list[str]:
    return [
        line
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream"
        for line in out.text.splitlines()
    ]


def test_the_copies_are_damaged(damaged_folder, monkeypatch):
    monkeypatch.delenv("CRATE_EDU_CHECKPOINTS", raising=False)
    monkeypatch.setenv("CRATE_EDU_CACHE", str(damaged_folder))
    for name in TUTORIAL_CHECKPOINTS:
        with pytest.raises(WeightsFileError, match="sha256 differs"):
            tutorial_checkpoint(name)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_notebook_carries_on_and_says_so_in_one_line(executed, name):
    nb = executed[name]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{name} stopped before its last cell"
    assert not [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    lines = _output_lines(nb)
    reported = [line for line in lines if "sha256 differs" in line]
    for checkpoint, fallback in EXPECTED[name].items():
        filename = TUTORIAL_CHECKPOINTS[checkpoint].filename
        mine = [line for line in reported if f"/{filename}:" in line]
        assert len(mine) == 1, f"{name}: {filename} should be reported in one line, got {mine}"
        assert fallback in mine[0], f"{name}: the line about {filename} does not say {fallback!r}: {mine[0]}"
    assert len(reported) == len(EXPECTED[name]), f"{name}: unexpected reports {reported}"
    assert not any("Traceback" in line for line in lines)
