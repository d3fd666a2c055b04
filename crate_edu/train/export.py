"""Exporting a training run as a weights file: the model, its name and options, its metrics.

``export_run("runs/cluttered", "crate.safetensors")`` reads the run's ``checkpoint.pt`` (through the
one safe reader), rebuilds the model from the run's configuration and writes it with
:func:`crate_edu.weights.save_weights`, recording the configuration and the last epoch's metrics,
so that :func:`crate_edu.weights.load_weights` can rebuild it without the training code.
``crate-edu export RUN FILE`` runs this.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crate_edu.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from crate_edu.train.config import TrainConfig, model_kwargs
from crate_edu.weights import rebuild_model, save_weights

__all__ = ["export_run"]

PathLike = str | Path


def export_run(
    run: PathLike,
    path: PathLike,
    *,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the weights of a ``crate_edu.train`` run (its folder or checkpoint file) to ``path``.

    The model name and overrides come from the run's configuration; its last epoch's metrics and
    its configuration are recorded in the metadata with ``metadata`` added on top.

    Args:
        run: a run folder or its ``checkpoint.pt``.
        path: the ``.safetensors`` file to write (its folder is created).
        metadata: JSON-serialisable extras recorded in the header.
        overwrite: replace an existing file at ``path`` (default: refuse, ``FileExistsError``).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False (nothing is written).
        IsADirectoryError: ``path`` is a folder.
        FileNotFoundError: no checkpoint at ``run``.
        crate_edu.weights.CheckpointError: the checkpoint cannot be read (truncated, not a
            checkpoint, a pickle that needs code, ...).
        crate_edu.weights.FileWriteError: the file cannot be written (disk full, read-only).
    """
    src = _export_paths(Path(run), Path(path), overwrite)
    ckpt = load_checkpoint(src)
    cfg = TrainConfig.from_dict(ckpt["config"])
    model = rebuild_model(cfg.model, model_kwargs(cfg), Path(run))
    model.load_state_dict(ckpt["model"])
    history = ckpt.get("history") or []
    meta: dict[str, Any] = {"train_config": cfg.to_dict()}
    if history:
        meta["final_metrics"] = history[-1]
    meta.update(metadata or {})
    return save_weights(model, path, model_name=cfg.model, overrides=model_kwargs(cfg), metadata=meta)


def _export_paths(run: Path, out: Path, overwrite: bool) -> Path:
    """The checkpoint file of ``run``, once both it and the file ``out`` to write are usable."""
    src = run / CHECKPOINT_NAME if run.is_dir() else run
    if not src.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {src}; give a run folder of crate-edu train or its checkpoint.pt"
        )
    if out.is_dir():
        raise IsADirectoryError(
            f"{out} is a folder; give the path of a .safetensors file to write, "
            f"e.g. {out / 'weights.safetensors'}"
        )
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"{out} already exists; choose another file name or replace it with overwrite=True "
            "(crate-edu export --force)"
        )
    return src
