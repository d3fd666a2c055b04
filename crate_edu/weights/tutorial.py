"""Small trained weights as self-describing safetensors files, and the ones the tutorial ships.

A weights file written here holds the tensors of a model and, in the safetensors header, what is
needed to rebuild it: the registry name and the ``create_model`` overrides. Loading never runs
code from the file (safetensors holds only tensors and strings)::

    from crate_edu.weights.tutorial import export_run, load_weights, load_tutorial_model

    export_run("runs/cluttered", "crate.safetensors")     # a crate_edu.train run -> weights file
    model, info = load_weights("crate.safetensors")       # rebuilt with create_model, eval mode
    model, info = load_tutorial_model("cluttered-digits-crate")   # a file shipped with the package

The tutorial's own files (:data:`TUTORIAL_CHECKPOINTS`, 5.8 MB in all) are package data in
``crate_edu/resources/checkpoints/`` (described in the README.md there), so every installation has
them, Colab's included; each is checked against its pinned sha256 before use.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "WeightsInfo",
    "TutorialCheckpoint",
    "TUTORIAL_CHECKPOINTS",
    "save_weights",
    "export_run",
    "is_weights_file",
    "read_weights_info",
    "load_weights",
    "tutorial_checkpoint",
    "load_tutorial_model",
    "shipped_checkpoint_dir",
    "WeightsFileError",
]

#: Format tag written into every file's header.
FORMAT = "crate_edu.weights/1"

PathLike = str | os.PathLike


class WeightsFileError(ValueError):
    """A weights file that cannot be used: not a crate_edu weights file, unreadable, or damaged."""


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights file says about itself.

    Attributes:
        model_name: the registry name (``crate_edu.list_models()``).
        overrides: ``create_model`` keyword arguments (``depth``, ``num_classes``, ...).
        metadata: anything else recorded (metrics, the command that made it, ...), JSON values.
        path: the file it was read from.
    """

    model_name: str
    overrides: dict[str, Any]
    metadata: dict[str, Any]
    path: Path


@dataclass(frozen=True)
class TutorialCheckpoint:
    """A weights file shipped in ``crate_edu/resources/checkpoints/`` (described in the README.md there)."""

    name: str
    filename: str
    sha256: str
    description: str


#: The files the notebooks load. The sha256 pins the committed file, so a damaged or different file
#: is refused rather than silently used.
TUTORIAL_CHECKPOINTS: dict[str, TutorialCheckpoint] = {
    c.name: c
    for c in [
        TutorialCheckpoint(
            "cluttered-digits-crate",
            "cluttered-digits-crate.safetensors",
            "0d53070984b43286b0b92531b78e37f2d36cce647abbf3297610a47cdc421b43",
            "CRATE (crate_nano_cifar, depth 4) trained by the cluttered-digits recipe",
        ),
        TutorialCheckpoint(
            "cluttered-digits-vit",
            "cluttered-digits-vit.safetensors",
            "9b9dc9874acff855e1597b5fb8d6ab1751b60906ee6ce44da081b6aeef4151a5",
            "ViT (vit_nano_cifar, depth 4) trained by the cluttered-digits recipe, same budget",
        ),
        TutorialCheckpoint(
            "cluttered-digits-crate-mae",
            "cluttered-digits-crate-mae.safetensors",
            "2964fdd6f88e0bf4cee0f67d796d996c2683f61d88f04fd2d9ff13ef3dbfdc82",
            "a small CRATE-MAE pretrained on cluttered-digits",
        ),
    ]
}


# --------------------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------------------


def save_weights(
    model: nn.Module,
    path: PathLike,
    *,
    model_name: str,
    overrides: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and how to rebuild it to a safetensors file (atomically).

    Args:
        model: the model (a ``torch.compile`` or DDP wrapper is unwrapped by name).
        path: the file to write (its folder is created).
        model_name: the registry name it was built from.
        overrides: the ``create_model`` overrides it was built with.
        metadata: JSON-serialisable extras (metrics, command, ...).

    Returns:
        The path written.
    """
    from safetensors.torch import save

    import crate_edu
    from crate_edu.train.checkpoint import atomic_write_bytes

    if model_name not in crate_edu.list_models():
        raise ValueError(f"unknown model {model_name!r}; choose one of crate_edu.list_models()")
    state = {}
    for key, value in model.state_dict().items():
        for prefix in ("_orig_mod.", "module."):
            key = key.removeprefix(prefix)
        state[key] = value.detach().to("cpu").contiguous()
    header = {
        "format": FORMAT,
        "model_name": model_name,
        "overrides": json.dumps(dict(overrides or {}), sort_keys=True),
        "metadata": json.dumps(dict(metadata or {}), sort_keys=True),
    }
    # The checksum covers the tensors' table (names, dtypes, shapes, offsets) and their bytes; adding
    # it to the header changes neither, so it is computed on a first serialisation.
    header[CHECKSUM_KEY] = _tensor_checksum(save(state, metadata=header))
    blob = save(state, metadata=header)
    return atomic_write_bytes(Path(path), lambda f: f.write(blob))


#: Header key of the checksum of a weights file's tensors (files written before it have none).
CHECKSUM_KEY = "tensors_sha256"


def _split_safetensors(blob: bytes) -> tuple[dict[str, Any], bytes]:
    """(header dict, data bytes) of a safetensors file's contents; ValueError if malformed."""
    if len(blob) < 8:
        raise ValueError("shorter than a safetensors header")
    n = int.from_bytes(blob[:8], "little")
    if not 0 < n <= len(blob) - 8:
        raise ValueError(f"header length {n} does not fit a file of {len(blob)} bytes")
    header = json.loads(blob[8 : 8 + n])
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header, blob[8 + n :]


def _tensor_checksum(blob: bytes) -> str:
    """sha256 over the tensor table of a safetensors file (canonical JSON, ``__metadata__`` left out)
    followed by its data bytes: any change to a tensor's bytes, dtype, shape or place changes it."""
    header, data = _split_safetensors(blob)
    table = {k: v for k, v in header.items() if k != "__metadata__"}
    digest = hashlib.sha256(json.dumps(table, sort_keys=True, separators=(",", ":")).encode())
    digest.update(data)
    return digest.hexdigest()


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
        crate_edu.weights.official.CheckpointError: the checkpoint cannot be read (truncated, not a
            checkpoint, a pickle that needs code, ...).
        crate_edu.train.checkpoint.FileWriteError: the file cannot be written (disk full, read-only).
    """
    from crate_edu.train import TrainConfig
    from crate_edu.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from crate_edu.train.config import model_kwargs

    src = Path(run) / CHECKPOINT_NAME if Path(run).is_dir() else Path(run)
    if not src.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {src}; give a run folder of crate-edu train or its checkpoint.pt"
        )
    out = Path(path)
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
    ckpt = load_checkpoint(src)
    cfg = TrainConfig.from_dict(ckpt["config"])
    model = _build(cfg.model, model_kwargs(cfg), Path(run))
    model.load_state_dict(ckpt["model"])
    history = ckpt.get("history") or []
    meta: dict[str, Any] = {"train_config": cfg.to_dict()}
    if history:
        meta["final_metrics"] = history[-1]
    meta.update(metadata or {})
    return save_weights(model, path, model_name=cfg.model, overrides=model_kwargs(cfg), metadata=meta)


# --------------------------------------------------------------------------------------------------
# Reading.
# --------------------------------------------------------------------------------------------------


def _header(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file; WeightsFileError if it is not one."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any parse failure means the same thing here
        raise WeightsFileError(
            f"{path} is not a safetensors file ({' '.join(str(exc).split())[:160]}); crate_edu weights "
            "files are written by crate_edu.weights.tutorial.save_weights (crate-edu export)"
        ) from None


def is_weights_file(path: PathLike) -> bool:
    """True if ``path`` is a safetensors file written by :func:`save_weights` (its header is read)."""
    try:
        return _header(Path(path)).get("format") == FORMAT
    except (OSError, WeightsFileError):
        return False


def read_weights_info(path: PathLike) -> WeightsInfo:
    """The header of a weights file written by :func:`save_weights` (no tensors are read)."""
    path = Path(path)
    header = _header(path)
    if header.get("format") != FORMAT:
        raise WeightsFileError(
            f"{path} is a safetensors file but not a crate_edu weights file (format "
            f"{header.get('format')!r}, expected {FORMAT!r}); load plain state dicts with "
            "crate_edu.load_official or model.load_state_dict"
        )
    try:
        overrides = json.loads(header.get("overrides", "{}"))
        metadata = json.loads(header.get("metadata", "{}"))
        model_name = header["model_name"]
    except (KeyError, ValueError) as exc:
        raise WeightsFileError(
            f"{path}: its header is damaged ({type(exc).__name__}: {exc}); export the weights again "
            "(crate-edu export RUN FILE --force) or copy the file again"
        ) from None
    if not isinstance(overrides, dict) or not isinstance(metadata, dict):
        raise WeightsFileError(f"{path}: its header is damaged (overrides or metadata not a JSON object)")
    return WeightsInfo(model_name=model_name, overrides=overrides, metadata=metadata, path=path)


def _build(model_name: str, overrides: Mapping[str, Any], source: Path) -> nn.Module:
    import crate_edu

    try:
        return crate_edu.create_model(model_name, **overrides)
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsFileError(
            f"{source}: cannot rebuild {model_name!r} with {dict(overrides)} ({exc}); the file was "
            "written by a different crate_edu version"
        ) from None


def load_weights(path: PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, WeightsInfo]:
    """Rebuild the model a :func:`save_weights` file describes and load its weights (eval mode).

    Returns:
        ``(model, info)``.
    """
    from safetensors.torch import load

    info = read_weights_info(path)
    model = _build(info.model_name, info.overrides, info.path)
    blob = info.path.read_bytes()
    header, _ = _split_safetensors(blob)
    expected = header.get("__metadata__", {}).get(CHECKSUM_KEY)
    if expected is not None and _tensor_checksum(blob) != expected:
        raise WeightsFileError(
            f"{info.path}: the tensor data does not match the checksum in its header, so the file is "
            "damaged (a partial copy or changed bytes); copy it again, or export it again from its run "
            "(crate-edu export RUN FILE --force)"
        )
    try:
        state = {k: v.to(map_location) for k, v in load(blob).items()}
    except Exception as exc:  # noqa: BLE001 - a malformed file (no checksum to catch it earlier)
        raise WeightsFileError(
            f"{info.path}: its tensors cannot be read ({' '.join(str(exc).split())[:160]}); copy the "
            "file again or export it again from its run"
        ) from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsFileError(
            f"{info.path}: weights do not fit {info.model_name} {info.overrides}: missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return model.eval(), info


# --------------------------------------------------------------------------------------------------
# The tutorial's shipped files.
# --------------------------------------------------------------------------------------------------


def shipped_checkpoint_dir() -> Path:
    """The folder inside the installed package that holds the tutorial's weights files.

    It is package data, so it is there in every installation: a clone, an editable install, a wheel,
    or ``pip install git+...`` on Colab.
    """
    return Path(__file__).resolve().parents[1] / "resources" / "checkpoints"


def _get(name: str) -> TutorialCheckpoint:
    if name not in TUTORIAL_CHECKPOINTS:
        raise ValueError(f"no tutorial checkpoint {name!r}; choose one of {', '.join(TUTORIAL_CHECKPOINTS)}")
    return TUTORIAL_CHECKPOINTS[name]


def tutorial_checkpoint(name: str) -> Path:
    """The path of a shipped weights file (see :data:`TUTORIAL_CHECKPOINTS`), checked against its sha256.

    Looked for in ``$CRATE_EDU_CHECKPOINTS`` when that is set (a folder of your own copies), then in
    the package (:func:`shipped_checkpoint_dir`).

    Raises:
        FileNotFoundError: in neither place, naming both.
        WeightsFileError: the file's sha256 differs from the pinned one (corrupt, or another version).
    """
    from crate_edu.weights.official import sha256sum

    entry = _get(name)
    places = []
    if os.environ.get("CRATE_EDU_CHECKPOINTS"):
        places.append(Path(os.environ["CRATE_EDU_CHECKPOINTS"]).expanduser())
    places.append(shipped_checkpoint_dir())
    for folder in places:
        path = folder / entry.filename
        if path.is_file():
            if sha256sum(path) != entry.sha256:
                raise WeightsFileError(
                    f"{path}: its sha256 differs from the one pinned for {entry.name!r}, so the file is "
                    "corrupt or from another version; reinstall crate_edu (pip install --force-reinstall) "
                    "or, for a copy in $CRATE_EDU_CHECKPOINTS, replace or delete it"
                )
            return path
    raise FileNotFoundError(
        f"{entry.filename} not found (looked in {', '.join(str(p) for p in places)}); it ships with "
        "crate_edu: reinstall the package (pip install --force-reinstall), or set CRATE_EDU_CHECKPOINTS "
        "to a folder holding it"
    )


def load_tutorial_model(name: str) -> tuple[nn.Module, WeightsInfo]:
    """Load a shipped model by name (e.g. ``"cluttered-digits-crate"``): ``(model, info)``, eval mode.

    Raises:
        FileNotFoundError: the file is missing.
        WeightsFileError: the file is damaged (its sha256 differs from the pinned one).
    """
    return load_weights(tutorial_checkpoint(name))
