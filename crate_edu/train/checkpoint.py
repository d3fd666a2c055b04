"""Crash-safe checkpoints in a safe format.

A checkpoint is one file written with ``torch.save`` and read back with
``torch.load(..., weights_only=True)``: it may hold tensors, numbers, strings, lists, tuples and
dicts, nothing that runs code when loaded. Everything a resumed run needs travels in it (model,
optimiser, scheduler and gradient-scaler states, the random number generators of every process,
the metrics so far and the run configuration).

Writes are atomic: the bytes go to a temporary file in the same folder, are flushed and
``fsync``-ed, and only then ``os.replace`` swaps the new file in. A crash at any moment (power
loss, out of disk, Ctrl-C) leaves either the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import json
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


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entry table, so that a rename inside it survives a power cut (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, write: Any) -> Path:
    """Write a file atomically: ``write(f)`` fills a temporary file that then replaces ``path``.

    Args:
        path: destination file.
        write: callable taking a binary file object open for writing.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    If ``write`` raises (or the process dies), ``path`` keeps its previous content and the
    temporary file is removed (on an exception) or left under a dot-name that the next write
    replaces.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Atomically write ``state`` (a dict of tensors and plain Python values) to ``path``.

    The ``"format"`` key is set to :data:`CHECKPOINT_FORMAT`.
    """
    state = {**state, "format": CHECKPOINT_FORMAT}
    return atomic_write_bytes(path, lambda f: torch.save(state, f))


def is_checkpoint(obj: Any) -> bool:
    """True if ``obj`` (a loaded file) is a checkpoint written by :func:`save_checkpoint`."""
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs).

    ``path`` may be the file or a run folder holding :data:`CHECKPOINT_NAME`.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: the file is not a crate_edu training checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    obj = torch.load(path, map_location=map_location, weights_only=True)
    if not is_checkpoint(obj):
        raise ValueError(
            f"{path} is not a crate_edu training checkpoint (no 'format': {CHECKPOINT_FORMAT!r})"
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


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON object as a line to ``path`` and flush it to disk."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Atomically replace ``path`` with ``records``, one JSON object a line."""
    text = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    atomic_write_bytes(path, lambda f: f.write(text))


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of ``path``, one a line (an empty list if the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
