"""Colab, simulated: every notebook's install cell installs crate_edu, and the installed package loads
its shipped checkpoints.

On Colab a notebook's first code cell runs ``pip install "crate-edu @ git+REPOSITORY"``, which
builds a wheel from the repository. Here a wheel is built from this checkout's tracked files, a
fresh virtual environment stands in for the Colab runtime (it sees the packages of this one, so
nothing is downloaded, but not this checkout), a stub ``google.colab`` module is imported, and the
install cell runs with pip pointed at that wheel. A second interpreter in that environment, started
outside the source tree, must import crate_edu from where pip put it and load every shipped
checkpoint from there.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

import crate_edu
from crate_edu.weights.tutorial import TUTORIAL_CHECKPOINTS

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: The requirement as the install cell writes it (an f-string over the cell's REPOSITORY).
REQUIREMENT = 'f"crate-edu @ git+{REPOSITORY}"'


def install_cell() -> str:
    """The first code cell every notebook must have, word for word."""
    return (
        "# On Google Colab, install crate_edu first (elsewhere this cell does nothing).\n"
        "import subprocess\n"
        "import sys\n"
        "\n"
        f'REPOSITORY = "{crate_edu.REPOSITORY}"  # the same as crate_edu.REPOSITORY\n'
        'if "google.colab" in sys.modules:\n'
        '    pip = [sys.executable, "-m", "pip", "install", "--quiet"]\n'
        f"    subprocess.run([*pip, {REQUIREMENT}], check=True)"
    )


def _first_code_cell(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code").strip()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_starts_with_the_install_cell(path):
    assert _first_code_cell(path) == install_cell(), (
        f"{path.name}: its first code cell must be the install cell of "
        "tests/notebooks/test_colab.py, word for word"
    )


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{(done.stdout + done.stderr)[-4000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of this checkout's tracked files (what a git+ install of the repository builds)."""
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    tracked = _run(["git", "ls-files", "-z"], cwd=ROOT).stdout.split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation"]
    _run([*pip, "--wheel-dir", str(dist), str(src)])
    (found,) = dist.glob("crate_edu-*.whl")
    return found


def test_the_wheel_holds_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for entry in TUTORIAL_CHECKPOINTS.values():
        assert f"crate_edu/resources/checkpoints/{entry.filename}" in names
    assert "crate_edu/resources/checkpoints/README.md" in names
    assert "crate_edu/resources/imagenet100_classes.txt" in names


def _colab_runtime(root: Path) -> Path:
    """A fresh venv that sees this environment's packages (pip included) but not this checkout."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=300
    )
    python = root / "venv" / "bin" / "python"
    child_site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    )
    # Every installed package of this environment except crate_edu itself (its editable hook and
    # metadata), as links in one folder that the new environment puts on its path.
    shared = root / "shared-site-packages"
    shared.mkdir()
    for parent in site.getsitepackages():
        for entry in Path(parent).iterdir():
            lowered = entry.name.lower()
            if lowered.startswith(("crate_edu", "crate-edu", "__editable__", "_crate_edu")):
                continue
            if lowered.endswith(".pth") or (shared / entry.name).exists():
                continue
            (shared / entry.name).symlink_to(entry)
    (child_site / "zz_shared.pth").write_text(str(shared) + "\n")
    stub = root / "stub" / "google" / "colab"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('"""Stands in for Colab\'s google.colab module."""\n')
    return python


def test_colab_install_cell_then_the_installed_package_loads_every_checkpoint(wheel, tmp_path):
    python = _colab_runtime(tmp_path)
    cell = install_cell()
    assert cell.count(REQUIREMENT) == 1
    # The cell as every notebook has it, with pip pointed at the local wheel instead of the repository.
    local = cell.replace(REQUIREMENT, repr(f"crate-edu @ {wheel.as_uri()}"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CRATE_EDU_CHECKPOINTS")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", HF_HUB_OFFLINE="1")
    colab = f"import google.colab\nexec({local!r})\n"
    _run([str(python), "-c", colab], cwd=tmp_path, env={**env, "PYTHONPATH": str(tmp_path / "stub")})

    check = """
import json
from pathlib import Path
import crate_edu
from crate_edu.weights.tutorial import TUTORIAL_CHECKPOINTS, load_tutorial_model
loaded = {}
for name in TUTORIAL_CHECKPOINTS:
    model, info = load_tutorial_model(name)
    loaded[name] = [str(info.path), type(model).__name__, sum(p.numel() for p in model.parameters())]
print(json.dumps({"package": str(Path(crate_edu.__file__).resolve()), "loaded": loaded}))
"""
    out = json.loads(_run([str(python), "-c", check], cwd=tmp_path, env=env).stdout.splitlines()[-1])
    venv = (tmp_path / "venv").resolve()
    assert Path(out["package"]).is_relative_to(venv), f"crate_edu was imported from {out['package']}"
    assert sorted(out["loaded"]) == sorted(TUTORIAL_CHECKPOINTS)
    for name, (path, kind, n_params) in out["loaded"].items():
        assert Path(path).resolve().is_relative_to(venv), f"{name} was loaded from {path}"
        assert n_params > 100_000, (name, kind, n_params)


def test_outside_colab_the_install_cell_does_nothing():
    done = subprocess.run(
        [sys.executable, "-c", install_cell()], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
