"""The README's code runs as written: every fenced block is executed here, so the README cannot drift.

Python blocks run in a fresh interpreter each. Shell blocks run in order, one command at a time,
in one shell-like state (working folder, environment), the way a new user types them:

- ``git clone URL``: the URL must be ``crate_edu.REPOSITORY``; git is pointed at this checkout
  instead of the network (``url.<here>.insteadOf``), so the clone is real.
- ``cd DIR``: changes the working folder (which must exist).
- ``pip install ...``: resolved by pip against what is installed, without installing or downloading
  anything (``--dry-run --no-index``): the extras exist and everything they need is satisfiable.
- ``jupyter lab ...``: started headless (a free port, no browser, ``--allow-root`` when the tests run
  as root, as the README says), and must serve the lab page and list the notebooks.
- ``pytest``: must be the test command that ``.ci/run`` runs (which is how it runs).
- ``crate-edu ...``: run for real and must exit 0.

Any other command fails the test: add a rule here when the README gains one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import crate_edu

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
LANGUAGES = ("python", "bash", "text")  # text: a picture of a layout, not code


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # 1-based line of the opening fence


def readme_blocks(path: Path = README) -> list[Block]:
    """The fenced code blocks of a Markdown file, in order."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^```(\S*)\s*$", lines[i])
        if opening:
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            assert j < len(lines), f"{path.name}:{i + 1}: a code block is never closed"
            blocks.append(Block(opening.group(1), "\n".join(lines[i + 1 : j]) + "\n", i + 1))
            i = j
        i += 1
    return blocks


BLOCKS = readme_blocks()
#: The shipped checkpoints' README shows Python too; its blocks must run as well.
CHECKPOINTS_README = ROOT / "crate_edu" / "resources" / "checkpoints" / "README.md"
PYTHON = [b for b in BLOCKS if b.language == "python"]
PYTHON_ELSEWHERE = [b for b in readme_blocks(CHECKPOINTS_README) if b.language == "python"]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}
    env.pop("CRATE_EDU_CHECKPOINTS", None)
    return env


def test_every_block_is_labelled_and_there_is_code_to_run():
    unlabelled = [b.line for b in BLOCKS if b.language not in LANGUAGES]
    assert not unlabelled, f"README.md lines {unlabelled}: label each block as one of {LANGUAGES}"
    assert PYTHON and any(b.language == "bash" for b in BLOCKS)


@pytest.mark.parametrize(
    "block",
    PYTHON + PYTHON_ELSEWHERE,
    ids=[f"README-line{b.line}" for b in PYTHON]
    + [f"checkpoints-README-line{b.line}" for b in PYTHON_ELSEWHERE],
)
def test_python_block_runs(block, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", block.code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"README.md:{block.line}: the Python block failed:\n{done.stderr[-3000:]}"


# --------------------------------------------------------------------------------------------------
# Shell blocks.
# --------------------------------------------------------------------------------------------------


@dataclass
class Shell:
    """What a user's shell carries from one command to the next."""

    cwd: Path
    home: Path
    env: dict[str, str] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)


def commands(code: str) -> list[tuple[dict[str, str], list[str], str]]:
    """``(environment assignments, argv, text)`` of every command of a shell block (``&&`` splits)."""
    out = []
    for line in code.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            part, words = words[:cut], words[cut + 1 :]
            assignments = {}
            while part and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", part[0]):
                key, _, value = part.pop(0).partition("=")
                assignments[key] = value
            assert part, f"an empty command in {line!r}"
            out.append((assignments, part, " ".join(part)))
    return out


def _check(done: subprocess.CompletedProcess, what: str) -> None:
    assert done.returncode == 0, (
        f"README command `{what}` exited with {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}"
    )


def _git_clone(argv: list[str], shell: Shell) -> None:
    url = argv[2]
    assert url == crate_edu.REPOSITORY, (
        f"the README clones {url}, the project lives at {crate_edu.REPOSITORY}"
    )
    # The same command, with git told that this checkout is that address (no network needed).
    rewrite = ["-c", f"url.{ROOT.as_uri()}.insteadOf={url}"]
    done = subprocess.run(["git", *rewrite, *argv[1:]], cwd=shell.cwd, capture_output=True, text=True)
    _check(done, " ".join(argv))


def _pip_install(argv: list[str], shell: Shell, env: dict[str, str]) -> None:
    probe = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation"]
    done = subprocess.run(
        [*probe, *argv[2:]], cwd=shell.cwd, env=env, capture_output=True, text=True, timeout=600
    )
    _check(done, " ".join(argv))
    assert "Would install" in done.stdout, done.stdout[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode("utf-8", "replace")


def _jupyter_lab(argv: list[str], shell: Shell, env: dict[str, str]) -> None:
    """Start the lab as written, headless, and check that it serves the notebooks; then stop it."""
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent))
    assert jupyter is not None, "jupyter is not installed next to this Python"
    port = _free_port()
    headless = [f"--port={port}", "--no-browser", "--ServerApp.token=", "--ServerApp.ip=127.0.0.1"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        headless.append("--allow-root")  # what the README tells users in containers to add
    runtime = {k: str(shell.home / k.lower()) for k in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR")}
    runtime["JUPYTER_RUNTIME_DIR"] = str(shell.home / "runtime")
    log = shell.home / f"jupyter-{port}.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [jupyter, *argv[1:], *headless], cwd=shell.cwd, env={**env, **runtime}, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline, status, page = time.monotonic() + 120, None, ""
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status, page = _get(f"http://127.0.0.1:{port}/lab")
                break
            except OSError:
                time.sleep(0.5)
        assert status == 200, f"`{' '.join(argv)}` did not serve /lab:\n{log.read_text()[-3000:]}"
        assert "JupyterLab" in page
        _, listing = _get(f"http://127.0.0.1:{port}/api/contents/")  # a folder argument is the root
        assert "01_coding_rate.ipynb" in listing, listing[:2000]
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def _pytest(argv: list[str]) -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert argv == ["pytest"], f"the README's test command is `{' '.join(argv)}`; CI runs `pytest`"
    assert 'pip install -e ".[dev]" && pytest' in ci, ".ci/run must run the README's commands"


def _crate_edu(argv: list[str], shell: Shell, env: dict[str, str]) -> None:
    exe = shutil.which("crate-edu", path=str(Path(sys.executable).parent))
    assert exe is not None, "the crate-edu command is not installed next to this Python"
    done = subprocess.run(
        [exe, *argv[1:]], cwd=shell.cwd, env=env, capture_output=True, text=True, timeout=900
    )
    _check(done, " ".join(argv))


def run_shell_command(assignments: dict[str, str], argv: list[str], shell: Shell) -> None:
    env = _env(**shell.env, **assignments)
    name = argv[0]
    if name == "git" and argv[1:2] == ["clone"]:
        _git_clone(argv, shell)
    elif name == "cd":
        target = (shell.cwd / argv[1]).resolve()
        assert target.is_dir(), f"`cd {argv[1]}`: no such folder at that point of the README"
        shell.cwd = target
    elif name == "pip" and argv[1:2] == ["install"]:
        _pip_install(argv, shell, env)
    elif name == "jupyter" and argv[1:2] == ["lab"]:
        _jupyter_lab(argv, shell, env)
    elif name == "pytest":
        _pytest(argv)
    elif name == "crate-edu":
        _crate_edu(argv, shell, env)
    else:
        pytest.fail(f"README command `{' '.join(argv)}` has no rule in tests/project/test_readme.py: add one")
    shell.ran.append(" ".join(argv))


def test_commands_are_parsed_as_a_shell_would():
    got = commands('A=1 jupyter lab notebooks/   # quick\npip install -e ".[dev]" && pytest\n')
    assert got == [
        ({"A": "1"}, ["jupyter", "lab", "notebooks/"], "jupyter lab notebooks/"),
        ({}, ["pip", "install", "-e", ".[dev]"], "pip install -e .[dev]"),
        ({}, ["pytest"], "pytest"),
    ]


def test_an_unknown_command_fails(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="has no rule"):
        run_shell_command({}, ["make", "all"], Shell(cwd=tmp_path, home=tmp_path))


def test_shell_blocks_run_in_order(tmp_path):
    shell = Shell(cwd=tmp_path, home=tmp_path)
    for block in (b for b in BLOCKS if b.language == "bash"):
        for assignments, argv, _ in commands(block.code):
            run_shell_command(assignments, argv, shell)
    ran = "\n".join(shell.ran)
    for needed in ("git clone", "pip install", "jupyter lab", "pytest", "crate-edu train", "crate-edu eval"):
        assert needed in ran, f"the README no longer shows `{needed}`"
    assert (shell.cwd / "digits.safetensors").is_file()  # what the README's export wrote


# --------------------------------------------------------------------------------------------------
# "Measured here": each figure equals the value in the results file its row names.
# --------------------------------------------------------------------------------------------------


def measured_rows(path: Path = README) -> list[tuple[str, str, str, str]]:
    """``(measurement, value, file, key)`` of each row of the README's "Measured here" table."""
    text = path.read_text(encoding="utf-8")
    section = text.split("## Measured here", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        source = re.fullmatch(r"`([\w.]+\.json)`: `([\w.]+)`", cells[-1]) if len(cells) == 3 else None
        if source:
            rows.append((cells[0], cells[1], source.group(1), source.group(2)))
    return rows


def recorded(file: str, key: str) -> float:
    value = json.loads((ROOT / "benchmarks" / "results" / file).read_text(encoding="utf-8"))
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return float(value)


def shows(value: str, number: float) -> bool:
    """Whether the README's ``value`` ("97.5 %", "11.4 min", "1.53×", "0.1995") shows ``number``,
    rounded as written (a percentage of a fraction, minutes of seconds)."""
    shown = re.match(r"[\d.]+", value).group()
    decimals = len(shown.partition(".")[2])
    unit = value[len(shown) :].strip()
    scale = {"%": 100.0, "min": 1 / 60}.get(unit, 1.0)
    return f"{number * scale:.{decimals}f}" == shown


def test_measured_figures_match_their_results_files():
    rows = measured_rows()
    assert len(rows) >= 8, "the README's 'Measured here' table lost its rows"
    wrong = [
        f"{what}: README {value}, {file} {key} = {recorded(file, key)}"
        for what, value, file, key in rows
        if not shows(value, recorded(file, key))
    ]
    assert not wrong, "\n".join(wrong)


def test_the_measured_check_can_fail():
    assert shows("97.5 %", 0.9749) and not shows("97.6 %", 0.9749)
    assert shows("11.4 min", 683.0) and not shows("12 min", 683.0)
    assert shows("1.53×", 1.5321) and shows("0.1995", 0.1995)
