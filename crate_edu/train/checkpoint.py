"""Crash-safe checkpoints in a safe format.

A checkpoint is one file written with ``torch.save`` and read back with
``torch.load(..., weights_only=True)``: it may hold tensors, numbers, strings, lists, tuples and
dicts, nothing that runs code when loaded. Everything a resumed run needs travels in it (model,
optimiser, scheduler and gradient-scaler states, the random number generators of every process,
the metrics so far and the run configuration).

Writes are atomic (``crate_edu.weights.atomic.atomic_write_bytes``): the bytes go to a temporary
file in the same folder, are flushed and ``fsync``-ed, and only then ``os.replace`` swaps the new
file in. A crash at any moment (power loss, out of disk, Ctrl-C) leaves either the previous
checkpoint or the new one, never a torn file; the temporary file of a killed writer is removed by
the next write. A write that fails (disk full, read-only folder, ...) raises
:class:`~crate_edu.weights.atomic.FileWriteError`, one line naming the file, the cause and the fix.
Every reader goes through ``crate_edu.weights.reader.read_checkpoint_file``: zip and legacy
``torch.save`` formats, one-line errors for truncated, foreign or unsafe files. ``metrics.jsonl``
is standard JSON (a NaN or infinity would be written as ``null``).

The file helpers the run folder needs (``atomic_write_bytes``, ``make_folder``, ``FileWriteError``)
live in ``crate_edu.weights.atomic``; they are imported here so that the training loop finds all of
its file I/O in one module.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crate_edu.weights.atomic import FileWriteError, atomic_write_bytes, make_folder, write_error
from crate_edu.weights.reader import CheckpointError, read_checkpoint_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "METRICS_NAME",
    "UNREADABLE_HINT",
    "FileWriteError",
    "append_jsonl",
    "atomic_write_bytes",
    "is_checkpoint",
    "json_line",
    "load_checkpoint",
    "make_folder",
    "read_checkpoint",
    "read_jsonl",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "write_jsonl",
]

#: Value of the ``"format"`` key that marks a checkpoint written by :mod:`crate_edu.train`.
CHECKPOINT_FORMAT = "crate_edu.train/1"
#: File name of the checkpoint inside a run folder.
CHECKPOINT_NAME = "checkpoint.pt"
#: File name of the per-epoch metrics (one JSON object a line) inside a run folder.
METRICS_NAME = "metrics.jsonl"
#: File name of the human-readable run configuration inside a run folder.
CONFIG_NAME = "config.json"


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
    """Read any checkpoint-like file safely (``crate_edu.weights.reader.read_checkpoint_file``).

    Returns what it holds: a training checkpoint (:func:`is_checkpoint`), or e.g. an official state
    dict. ``path`` may be a run folder (its :data:`CHECKPOINT_NAME` is read).

    Raises:
        FileNotFoundError: nothing at ``path``.
        crate_edu.weights.CheckpointError: the file cannot be read (truncated, random bytes, a
            text file, a pickle that needs code, ...), in one line.
    """
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
        crate_edu.weights.CheckpointError (a ``ValueError``): the file cannot be read, or is not a
            crate_edu training checkpoint; one line.
    """
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
