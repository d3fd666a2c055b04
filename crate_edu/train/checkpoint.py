"""Crash-safe checkpoints in a safe format.

A checkpoint is one file written with ``torch.save`` and read back with
``torch.load(..., weights_only=True)``: it may hold tensors, numbers, strings, lists, tuples and
dicts, nothing that runs code when loaded. Everything a resumed run needs travels in it (model,
optimiser, scheduler and gradient-scaler states, the random number generators of every process,
the metrics so far and the run configuration).

Writes are atomic: the bytes go to a temporary file in the same folder, are flushed and
``fsync``-ed, and only then ``os.replace`` swaps the new file in. A crash at any moment (power
loss, out of disk, Ctrl-C) leaves either the previous checkpoint or the new one, never a torn file;
the temporary file of a killed writer is removed by the next write. A write that fails (disk full,
read-only folder, ...) raises :class:`FileWriteError`, one line naming the file, the cause and the
fix. Every reader goes through ``crate_edu.weights.official.read_checkpoint_file``: zip and legacy
``torch.save`` formats, one-line errors for truncated, foreign or unsafe files. ``metrics.jsonl``
is standard JSON (a NaN or infinity would be written as ``null``).
"""

from __future__ import annotations

import errno
import glob
import json
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Value of the ``"format"`` key that marks a checkpoint written by :mod:`crate_edu.train`.
CHECKPOINT_FORMAT = "crate_edu.train/1"
#: File name of the checkpoint inside a run folder.
CHECKPOINT_NAME = "checkpoint.pt"
#: File name of the per-epoch metrics (one JSON object a line) inside a run folder.
METRICS_NAME = "metrics.jsonl"
#: File name of the human-readable run configuration inside a run folder.
CONFIG_NAME = "config.json"


class FileWriteError(OSError):
    """A file could not be written (disk full, read-only folder, no permission, a path that is a
    folder, ...). ``str(err)`` is one line naming the file, the cause and what to do; the previous
    version of the file, if any, is unchanged (writes are atomic). ``errno`` is the cause's."""


#: What to do about a failed file-system operation, by cause.
_OS_FIXES = {
    errno.ENOENT: "check the path",
    errno.ENOSPC: "free space on that disk or write somewhere else",
    errno.EDQUOT: "free space within your disk quota or write somewhere else",
    errno.EROFS: "the file system is read-only: write to a folder on a writable disk",
    errno.EACCES: "you may not write there: choose a folder you own or fix its permissions",
    errno.EPERM: "you may not write there: choose a folder you own or fix its permissions",
    errno.EISDIR: "that path is a folder: give a file name",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
    errno.EEXIST: "a part of that path is a file, not a folder: choose another path",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter one",
}


def os_error_fix(exc: OSError) -> str:
    """What to do about an operating-system error, by its cause (one short clause)."""
    return _OS_FIXES.get(exc.errno or -1, "check the path, its permissions and the free space")


def write_error(path: str | os.PathLike, exc: OSError, *, previous: bool = True) -> FileWriteError:
    """The one-line :class:`FileWriteError` for a failed write of ``path`` caused by ``exc``."""
    cause = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    kept = f"; the previous {Path(path).name} is unchanged" if previous and Path(path).is_file() else ""
    err = FileWriteError(f"could not write {path}: {cause} ({_errno_name(exc)}); {os_error_fix(exc)}{kept}")
    err.errno = exc.errno
    return err


def make_folder(folder: str | os.PathLike) -> list[Path]:
    """Create ``folder`` (and missing parents); returns the folders created, deepest first.

    Raises:
        FileWriteError: it cannot be created (read-only file system, no permission, ...).
    """
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(folder, e, previous=False) from None
    return missing


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or -1, type(exc).__name__)


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entry table, so that a rename inside it survives a power cut (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Temporary files of :func:`atomic_write_bytes`: ``.<name>.tmp-<pid>`` next to the destination.
_TMP_SUFFIX = ".tmp-"


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (POSIX); elsewhere assumed alive (its file is then left)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists but belongs to someone else
        return True
    return True


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers of ``path`` killed mid-write left behind.

    A temporary file ``.<name>.tmp-<pid>`` whose process no longer exists can never be finished;
    one of a live process (another writer at work) is left alone. Returns the files deleted.
    """
    path = Path(path)
    removed = []
    prefix = f".{path.name}{_TMP_SUFFIX}"
    try:
        candidates = list(path.parent.glob(f".{glob.escape(path.name)}{_TMP_SUFFIX}*"))
    except OSError:
        return removed
    for tmp in candidates:
        pid = tmp.name[len(prefix) :]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass  # e.g. removed by someone else meanwhile
    return removed


def atomic_write_bytes(path: str | os.PathLike, write: Any) -> Path:
    """Write a file atomically: ``write(f)`` fills a temporary file that then replaces ``path``.

    Args:
        path: destination file.
        write: callable taking a binary file object open for writing.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileWriteError: the file could not be written (disk full, read-only, no permission, ``path``
            is a folder, ...); ``path`` keeps its previous content and the temporary file is removed.

    The temporary file is ``.<name>.tmp-<pid>`` in the same folder. If ``write`` raises, ``path``
    keeps its previous content and the temporary file is removed; if the process is killed, the
    next write of ``path`` (by any process) removes the temporary file it left.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc) from None
    remove_stale_temp_files(path)
    tmp = path.with_name(f".{path.name}{_TMP_SUFFIX}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # e.g. a read-only file system: never hide the error that got us here
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise
    try:
        _fsync_dir(path.parent)
    except OSError:
        pass  # the file is in place; some file systems cannot fsync a folder
    return path


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Atomically write ``state`` (a dict of tensors and plain Python values) to ``path``.

    The ``"format"`` key is set to :data:`CHECKPOINT_FORMAT`.

    Raises:
        FileWriteError: the file could not be written; the previous checkpoint is unchanged.
    """
    state = {**state, "format": CHECKPOINT_FORMAT}
    return atomic_write_bytes(path, lambda f: torch.save(state, f))


def is_checkpoint(obj: Any) -> bool:
    """True if ``obj`` (a loaded file) is a checkpoint written by :func:`save_checkpoint`."""
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


#: What to do about a checkpoint file that cannot be read.
UNREADABLE_HINT = (
    "use the checkpoint.pt of a run folder written by crate-edu train (copy it again if it was "
    "copied), or start a new run"
)


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *, mmap: bool = False) -> Any:
    """Read any checkpoint-like file safely (``crate_edu.weights.official.read_checkpoint_file``).

    Returns what it holds: a training checkpoint (:func:`is_checkpoint`), or e.g. an official state
    dict. ``path`` may be a run folder (its :data:`CHECKPOINT_NAME` is read).

    Raises:
        FileNotFoundError: nothing at ``path``.
        crate_edu.weights.official.CheckpointError: the file cannot be read (truncated, random bytes, a
            text file, a pickle that needs code, ...), in one line.
    """
    from crate_edu.weights.official import read_checkpoint_file

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file() and not path.is_dir():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return read_checkpoint_file(path, map_location, mmap=mmap, hint=UNREADABLE_HINT)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs).

    ``path`` may be the file or a run folder holding :data:`CHECKPOINT_NAME`. Zip and legacy
    ``torch.save`` formats are read (:func:`read_checkpoint`).

    Raises:
        FileNotFoundError: nothing at ``path``.
        crate_edu.weights.official.CheckpointError (a ``ValueError``): the file cannot be read, or is not a
            crate_edu training checkpoint; one line.
    """
    from crate_edu.weights.official import CheckpointError

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    obj = read_checkpoint(path, map_location)
    if not is_checkpoint(obj):
        raise CheckpointError(
            f"{path} is not a crate_edu training checkpoint (no 'format': {CHECKPOINT_FORMAT!r}); give "
            "the checkpoint.pt of a run folder written by crate-edu train"
        )
    return obj


# --------------------------------------------------------------------------------------------
# Random number generators, as values that weights_only loading accepts.
# --------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) global generators.

    NumPy's state holds an array, which ``weights_only`` loading refuses; it is stored as a tensor.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generators saved by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# Metrics log.
# --------------------------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by None, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_line(record: dict[str, Any]) -> str:
    """``record`` as one line of standard JSON: a NaN or infinity is written as ``null``."""
    return json.dumps(_finite(record), allow_nan=False)


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON object as a line to ``path`` and flush it to disk (strict JSON: non-finite
    numbers become ``null``).

    Raises:
        FileWriteError: the line could not be written (disk full, ...); the lines before it stay.
    """
    line = json_line(record) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise write_error(path, exc, previous=False) from None


def write_jsonl(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Atomically replace ``path`` with ``records``, one JSON object a line (strict JSON)."""
    text = "".join(json_line(r) + "\n" for r in records).encode("utf-8")
    atomic_write_bytes(path, lambda f: f.write(text))


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of ``path``, one a line (an empty list if the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
